"""The Kafka side of the gateway: publish and wait for the acks=all acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from siteview_common.events import Route
from siteview_webhooks.handlers import PublishTimeoutError


class KafkaPublisher:
    def __init__(self, broker: KafkaBroker, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout

    async def publish(self, route: Route, value: bytes, headers: Mapping[str, str]) -> None:
        try:
            await asyncio.wait_for(
                self._broker.publish(
                    value, topic=route.topic, key=route.key.encode(), headers=dict(headers)
                ),
                timeout=self._timeout,
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            raise PublishTimeoutError("the broker did not acknowledge in time") from exc
