"""The demo page's server in `make dev`: examples/web, as static files, on 127.0.0.1.

The standard library's file server, with `Cache-Control: no-cache` so that an edited page or
script shows on the next reload instead of a copy the browser kept.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from siteview_devstack.engines import REPO

WEB_DIR = REPO / "examples" / "web"


class PageHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="siteview-demo-page", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--directory", type=Path, default=WEB_DIR)
    args = parser.parse_args(argv)
    handler = partial(PageHandler, directory=str(args.directory))
    with ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print(f"serving {args.directory} on http://127.0.0.1:{args.port}/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
