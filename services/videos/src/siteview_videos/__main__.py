"""`siteview-videos api|worker`: run one process type of the videos service."""

from __future__ import annotations

from siteview_common.cli import run_service
from siteview_videos.bootstrap import create_api, create_worker
from siteview_videos.settings import VideosSettings


def main() -> None:
    run_service("videos", VideosSettings, api=create_api, worker=create_worker)


if __name__ == "__main__":
    main()
