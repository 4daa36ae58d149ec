"""`make dev`: the whole system on one machine, in one terminal.

Starts Tansu on 127.0.0.1:9092 and the MongoDB stand-in on 127.0.0.1:27017 (unless
KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL point elsewhere), creates the topics, then runs every
service's api and worker with their logs prefixed by name. Ctrl-C or SIGTERM stops it all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from siteview_common.dev import DEV_WEBHOOK_SECRET
from siteview_common.kafka import ensure_topics
from siteview_common.settings import KafkaSettings, load_settings
from siteview_devstack.broker import TansuBroker
from siteview_devstack.mongo.server import MongoStandIn
from siteview_devstack.processes import NAME_WIDTH, Supervisor, base_env, service_specs

BANNER = """
SiteView is up (APP_ENV={app_env}).
  gateway   http://127.0.0.1:8000/webhooks/clerk   (also /clerk-users-webhook)
  users     http://127.0.0.1:8001/users/me
  payments  http://127.0.0.1:8002/payments/me
  videos    http://127.0.0.1:8003/videos
  broker    {kafka}{kafka_note}
  database  {mongo}{mongo_note}
Webhook signing secret: {secret}
Send a signed example event (the README walks through more):
  .venv/bin/siteview-dev-sign examples/clerk/user.created.json > /tmp/svix-headers
  curl -i -H @/tmp/svix-headers --data-binary @examples/clerk/user.created.json \\
       http://127.0.0.1:8000/webhooks/clerk
Mint a session token:
  .venv/bin/siteview-dev-token user_2abcDEFghiJKLmnoPQRstuVWx
Ctrl-C stops everything.
"""


def log(message: str) -> None:
    print(f"{'devstack':<{NAME_WIDTH}} | {message}", flush=True)


async def run() -> int:
    os.environ.setdefault("APP_ENV", "development")
    settings = load_settings(KafkaSettings, "kafka_servers")
    env = base_env()
    broker: TansuBroker | None = None
    standin: MongoStandIn | None = None
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = TansuBroker(port=9092).start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        log(f"Tansu broker on {broker.bootstrap_servers} (in memory: restarts start empty)")
    if not os.environ.get("MONGODB_URL"):
        standin = MongoStandIn()
        await standin.start("127.0.0.1", 27017)
        env["MONGODB_URL"] = standin.url
        log(f"MongoDB wire-protocol STAND-IN on {standin.url} (not MongoDB; in memory)")
    settings = settings.model_copy(
        update={"kafka_bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]}
    )
    await ensure_topics(settings)

    supervisor = Supervisor(env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        for spec in service_specs():
            supervisor.start(spec)
        await asyncio.to_thread(supervisor.wait_ready)
        secret = (
            os.environ.get("CLERK_WEBHOOK_SIGNING_SECRET")
            or os.environ.get("CLERK_WEBHOOK_SECRET")
            or f"{DEV_WEBHOOK_SECRET} (the dev secret)"
        )
        print(
            BANNER.format(
                app_env=env.get("APP_ENV"),
                kafka=env["KAFKA_BOOTSTRAP_SERVERS"],
                kafka_note=" (Tansu, embedded)" if broker else "",
                mongo=env["MONGODB_URL"],
                mongo_note=" (wire-protocol stand-in, embedded)" if standin else "",
                secret=secret,
            ),
            flush=True,
        )
        while not stop.is_set():
            if dead := supervisor.exited():
                log(f"{dead[0].spec.name} exited with {dead[0].popen.returncode}; stopping")
                code = 1
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                pass
    except (RuntimeError, TimeoutError) as exc:
        log(f"start-up failed: {exc}")
        code = 1
    finally:
        log("stopping")
        await asyncio.to_thread(supervisor.stop_all)
        if standin:
            await standin.stop()
        if broker:
            broker.stop()
        log("stopped")
    return code


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
