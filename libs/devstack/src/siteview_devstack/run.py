"""`make dev`: the whole system on one machine, in one terminal.

Checks first that every port it will use is free (else: one line per taken port naming what
holds it, exit 2). Then starts the embedded broker (Tansu, 127.0.0.1:9092) and database (the
MongoDB stand-in, 127.0.0.1:27017) unless KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL point
elsewhere, creates the topics, and runs every service's api and worker with their logs
prefixed by name, and serves the demo page (examples/web) on the gateway's port + 80, with
the APIs' CORS_ORIGINS naming its origins. "SiteView is up" is printed once every process
answered.

A service process that crashes is restarted after a back-off (0.5 s, doubling to 30 s; back to
0.5 s once it ran 60 s), while the broker and the database keep running, so nothing they
acknowledged is lost. If the broker or the database itself dies, everything it held in memory
is gone: that is said loudly and everything stops. Ctrl-C or SIGTERM stops it all; children
die with this process even when it is killed (see processes.py).

The broker and the database are pluggable: a starter in BROKERS / DATABASES turns the options
into an `Engine` (its processes and the address the services get). `--engines` (`make dev
ENGINES=1`) runs Apache Kafka and FerretDB instead, provisioned by `make engines`, with their
data under `.data/`: it survives a restart of either engine (which is then restarted like a
service) and of `make dev` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from siteview_common.dev import DEV_WEBHOOK_SECRET
from siteview_common.kafka import ensure_topics
from siteview_common.settings import KafkaSettings, load_settings
from siteview_devstack.broker import TansuBroker
from siteview_devstack.engines import (
    FERRETDB_VERSION,
    KAFKA_VERSION,
    REPO,
    EngineError,
    FerretDBServer,
    KafkaServer,
)
from siteview_devstack.processes import (
    SERVICES,
    SUPERVISOR_NAME,
    ProcessSpec,
    RestartPolicy,
    RunningProcess,
    Supervisor,
    base_env,
    ports_in_use,
    print_line,
    service_specs,
)

BANNER = """
SiteView is up (APP_ENV={app_env}).
{urls}
  broker    {kafka}{kafka_note}
  database  {mongo}{mongo_note}
  demo page {page}
Webhook signing secret: {secret}
Send a signed example event (the README walks through more):
  .venv/bin/siteview-dev-sign examples/clerk/user.created.json > /tmp/svix-headers
  curl -i -H @/tmp/svix-headers --data-binary @examples/clerk/user.created.json \\
       http://127.0.0.1:{gateway_port}/webhooks/clerk
Mint a session token (paste it into the demo page to watch that user's videos and payments):
  .venv/bin/siteview-dev-token user_2abcDEFghiJKLmnoPQRstuVWx
Ctrl-C stops everything.
"""

API_PATHS = {"users": "/users/me", "payments": "/payments/me", "videos": "/videos"}

#: The demo page's port is the gateway's + this (8080 by default).
WEB_PORT_OFFSET = 80
#: The APIs the demo page streams from, and the port each has with the default base port: the
#: page defaults to those, so its URL names an API only when it runs elsewhere.
PAGE_APIS = {"videos": 8003, "payments": 8002}

#: How long a start-up step may take before `make dev` gives up.
START_TIMEOUT = 90.0


def log(message: str) -> None:
    print_line(SUPERVISOR_NAME, message)


@dataclass(frozen=True)
class Options:
    base_port: int = 8000
    services: tuple[str, ...] = SERVICES
    broker: str = "tansu"
    broker_port: int = 9092
    database: str = "standin"
    database_port: int = 27017
    web_port: int | None = None  # None: base_port + WEB_PORT_OFFSET

    @property
    def page_port(self) -> int:
        return self.web_port if self.web_port is not None else self.base_port + WEB_PORT_OFFSET


@dataclass(frozen=True)
class Engine:
    """A broker or database `make dev` runs itself."""

    role: str  # "broker" or "database"
    variable: str  # the setting that gives the services its address
    address: str
    processes: tuple[ProcessSpec, ...]  # started in order; none is ever restarted
    note: str  # what it is, for the log and the banner
    loss: str  # what its death means


def tansu(options: Options) -> Engine:
    broker = TansuBroker(port=options.broker_port)
    return Engine(
        role="broker",
        variable="KAFKA_BOOTSTRAP_SERVERS",
        address=broker.bootstrap_servers,
        processes=(ProcessSpec.program("tansu", broker.argv(), options.broker_port),),
        note="Tansu, embedded, in memory: a restart starts empty",
        loss="every event it held (in memory) is gone",
    )


def mongo_standin(options: Options) -> Engine:
    port = options.database_port
    # Through -c: `-m siteview_devstack.mongo.server` warns, as the package imports it first.
    run_server = "from siteview_devstack.mongo.server import main; main()"
    spec = ProcessSpec.program(
        "mongo-standin", (sys.executable, "-c", run_server, "--port", str(port)), port
    )
    return Engine(
        role="database",
        variable="MONGODB_URL",
        address=f"mongodb://127.0.0.1:{port}",
        processes=(spec,),
        note="MongoDB wire-protocol STAND-IN, embedded: not MongoDB, in memory",
        loss="every record it held (in memory) is gone",
    )


#: Where `--engines` keeps Apache Kafka's and FerretDB's data.
DATA_DIR = REPO / ".data"


def apache_kafka(options: Options) -> Engine:
    server = KafkaServer(data_dir=DATA_DIR / "kafka", port=options.broker_port)
    argv = server.prepare()  # formats the log directory on first use
    return Engine(
        role="broker",
        variable="KAFKA_BOOTSTRAP_SERVERS",
        address=server.bootstrap_servers,
        processes=(ProcessSpec.program("kafka", argv, options.broker_port, restart=True),),
        note=f"Apache Kafka {KAFKA_VERSION}, data in .data/kafka, kept across restarts",
        loss="the services cannot publish or consume until it is back",
    )


def ferretdb(options: Options) -> Engine:
    port = options.database_port
    server = FerretDBServer(data_dir=DATA_DIR / "ferretdb", port=port)
    return Engine(
        role="database",
        variable="MONGODB_URL",
        address=server.url,
        processes=(ProcessSpec.program("ferretdb", server.prepare(), port, restart=True),),
        note=f"FerretDB {FERRETDB_VERSION} on SQLite, data in .data/ferretdb, kept across restarts",
        loss="the services cannot read or write until it is back",
    )


BROKERS: dict[str, Callable[[Options], Engine]] = {"tansu": tansu, "kafka": apache_kafka}
DATABASES: dict[str, Callable[[Options], Engine]] = {
    "standin": mongo_standin,
    "ferretdb": ferretdb,
}


def engines_for(options: Options) -> list[Engine]:
    """What to run ourselves: what KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL do not point at."""
    engines = []
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        engines.append(BROKERS[options.broker](options))
    if not os.environ.get("MONGODB_URL"):
        engines.append(DATABASES[options.database](options))
    return engines


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="siteview-dev", description="Run the whole system on one machine (make dev)."
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=8000,
        help="the gateway's port; APIs on the next three, workers on their API's port + 100",
    )
    parser.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="comma-separated services to run besides the gateway ('none': the gateway only)",
    )
    parser.add_argument(
        "--engines",
        action="store_true",
        help="run on Apache Kafka + FerretDB (make engines) with data under .data/",
    )
    parser.add_argument("--broker-port", type=int, default=9092, help="the broker's")
    parser.add_argument("--mongo-port", type=int, default=27017, help="the database's")
    parser.add_argument(
        "--web-port",
        type=int,
        default=None,
        help=f"the demo page's (default: the base port + {WEB_PORT_OFFSET})",
    )
    args = parser.parse_args(argv)
    services = tuple(s for s in args.services.split(",") if s.strip() not in ("", "none"))
    if unknown := [s for s in services if s not in SERVICES]:
        parser.error(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICES)}")
    return Options(
        base_port=args.base_port,
        services=services,
        broker="kafka" if args.engines else "tansu",
        broker_port=args.broker_port,
        database="ferretdb" if args.engines else "standin",
        database_port=args.mongo_port,
        web_port=args.web_port,
    )


def page_spec(port: int) -> ProcessSpec:
    """The demo page's static server (stateless: restarted like a service after a crash)."""
    argv = (sys.executable, "-m", "siteview_devstack.webpage", "--port", str(port))
    return ProcessSpec.program("demo-page", argv, port, restart=True)


def page_origins(port: int) -> str:
    """The demo page's origins, as CORS_ORIGINS lists them: by address and by name."""
    return f"http://127.0.0.1:{port},http://localhost:{port}"


def page_url(page: ProcessSpec, specs: Sequence[ProcessSpec]) -> str:
    """The demo page's address, naming the APIs it streams from where they are not on the
    ports the page assumes."""
    ports = {spec.name.removesuffix("-api"): spec.port for spec in specs if spec.args == ("api",)}
    query = "&".join(
        f"{service}=http://127.0.0.1:{ports[service]}"
        for service, usual in PAGE_APIS.items()
        if ports.get(service, usual) != usual
    )
    return f"http://127.0.0.1:{page.port}/" + (f"?{query}" if query else "")


def api_env(specs: Sequence[ProcessSpec], page: ProcessSpec) -> dict[str, dict[str, str]]:
    """What each API gets on top of the common environment: CORS_ORIGINS naming the demo
    page, so that its credentialed EventSource works, unless the developer set CORS_ORIGINS."""
    if "CORS_ORIGINS" in os.environ:
        return {}
    origins = page_origins(page.port)
    return {spec.name: {"CORS_ORIGINS": origins} for spec in specs if spec.args == ("api",)}


def banner(
    env: dict[str, str], specs: list[ProcessSpec], engines: list[Engine], page: ProcessSpec
) -> str:
    urls = [f"  {'gateway':<9} http://127.0.0.1:{specs[0].port}/webhooks/clerk"]
    for spec in specs:
        service = spec.name.removesuffix("-api")
        if service in API_PATHS and spec.args == ("api",):
            urls.append(f"  {service:<9} http://127.0.0.1:{spec.port}{API_PATHS[service]}")
    notes = {engine.role: f" ({engine.note})" for engine in engines}
    secret = (
        os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET")
        or os.environ.get("CLERK_WEBHOOK_SECRET")
        or f"{DEV_WEBHOOK_SECRET} (the dev secret)"
    )
    return BANNER.format(
        app_env=env.get("APP_ENV"),
        urls="\n".join(urls),
        kafka=env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_note=notes.get("broker", ""),
        mongo=env["MONGODB_URL"],
        mongo_note=notes.get("database", ""),
        page=page_url(page, specs),
        secret=secret,
        gateway_port=specs[0].port,
    )


def say_loudly(engine: Engine, proc: RunningProcess) -> None:
    rule = "!" * 78
    for line in (
        rule,
        f"THE {engine.role.upper()} DIED: {proc.spec.name} exited with "
        f"{proc.popen.returncode}; {engine.loss}.",
        "The services cannot work without it: stopping everything.",
        rule,
    ):
        log(line)


async def unless_stopped(stop: asyncio.Event, work: Awaitable[Any]) -> bool:
    """Await `work` unless `stop` is set first; whether it finished (its errors propagate)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        task.result()
        return True
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # ends once closed
    return False


async def run(options: Options) -> int:
    os.environ.setdefault("APP_ENV", "development")
    settings = load_settings(KafkaSettings, "kafka_servers")
    try:
        engines = engines_for(options)
    except EngineError as exc:
        print(f"siteview-dev: {exc}", file=sys.stderr)
        return 2
    specs = service_specs(base_port=options.base_port, services=options.services)
    page = page_spec(options.page_port)
    extra_env = api_env(specs, page)

    wanted = {spec.port: spec.name for engine in engines for spec in engine.processes}
    wanted.update({spec.port: spec.name for spec in [*specs, page]})
    if taken := ports_in_use(wanted):
        for line in taken:
            print(f"siteview-dev: {line}", file=sys.stderr)
        return 2

    env = base_env()
    for engine in engines:
        env[engine.variable] = engine.address
    supervisor = Supervisor(env, restart=RestartPolicy())
    owner = {spec.name: engine for engine in engines for spec in engine.processes}

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def start(batch: Sequence[ProcessSpec]) -> None:
        for spec in batch:
            supervisor.start(spec, extra_env.get(spec.name))
        supervisor.wait_ready([spec.name for spec in batch], timeout=START_TIMEOUT)

    code = 0
    try:
        for engine in engines:
            log(f"{engine.role}: {engine.address} ({engine.note})")
            if not await unless_stopped(stop, asyncio.to_thread(start, engine.processes)):
                return 0
        settings = settings.model_copy(
            update={"kafka_bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]}
        )
        if not await unless_stopped(stop, ensure_topics(settings)):
            return 0
        if not await unless_stopped(stop, asyncio.to_thread(start, [*specs, page])):
            return 0
        print(banner(env, specs, engines, page), flush=True)
        while not stop.is_set():
            for proc in await asyncio.to_thread(supervisor.tend):
                if engine_of := owner.get(proc.spec.name):
                    say_loudly(engine_of, proc)
                else:
                    log(f"{proc.spec.name} exited with {proc.popen.returncode}; stopping")
                code = 1
            if code:
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.25)
            except TimeoutError:
                pass
    except (RuntimeError, TimeoutError, OSError) as exc:
        log(f"start-up failed: {exc}")
        code = 1
    finally:
        log("stopping")
        await asyncio.to_thread(supervisor.close)
        log("stopped")
    return code


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    sys.exit(asyncio.run(run(options)))


if __name__ == "__main__":
    main()
