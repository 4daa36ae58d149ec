"""A worker process built like every service's (`worker_app`: its lifespan opens MongoDB,
subscribes, creates the topics, starts the broker), consuming only the topic named by
`TEST_TOPIC`: lets a test start a real worker on a topic of its own. It applies nothing."""

from __future__ import annotations

import os
from collections.abc import Sequence

from siteview_common.events import PublishedEvent
from siteview_common.runtime import Runtime, WorkerSettings, worker_app
from siteview_common.serve import serve
from siteview_common.settings import load_settings


def parse(event: PublishedEvent) -> str:
    return event.svix_id


async def apply(commands: Sequence[str]) -> None:
    return None


async def subscribe(runtime: Runtime) -> None:
    topic = os.environ["TEST_TOPIC"]
    runtime.consume(topic, group=f"{topic}-worker", parse=parse, apply=apply)


def main() -> None:
    settings = load_settings(WorkerSettings, "mongo_url", "kafka_servers")
    serve(worker_app("topic-worker", settings, subscribe), settings, "topic-worker")


if __name__ == "__main__":
    main()
