"""Ceilings 2 and 3: bare aiokafka, no framework, on the same broker and topic.

`produce BOOTSTRAP TOPIC SECONDS CONCURRENCY FILE IDEMPOTENT`: `CONCURRENCY` tasks each
`send_and_wait` (acks=all, idempotent when IDEMPOTENT is 1, as the gateway publishes) the
messages of FILE (one JSON envelope per line, keyed by its user) for SECONDS; prints
`{"messages": n, "seconds": s}`.

`fetch BOOTSTRAP TOPIC COUNT`: reads COUNT messages from the earliest offset with `getmany`
(partitions assigned, no group) and prints `{"messages": n, "seconds": s}`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def read_records(file: str) -> list[tuple[bytes, bytes]]:
    lines = [json.loads(line) for line in Path(file).read_text().splitlines()]
    return [(line["key"].encode(), line["value"].encode()) for line in lines]


async def produce(
    bootstrap: str,
    topic: str,
    seconds: float,
    concurrency: int,
    records: list[tuple[bytes, bytes]],
    idempotent: bool,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent
    )
    await producer.start()
    sent = 0
    deadline = time.perf_counter() + seconds

    async def sender(offset: int) -> None:
        nonlocal sent
        i = offset
        while time.perf_counter() < deadline:
            key, value = records[i % len(records)]
            await producer.send_and_wait(topic, value, key=key)
            sent += 1
            i += concurrency

    started = time.perf_counter()
    try:
        await asyncio.gather(*(sender(n) for n in range(concurrency)))
    finally:
        await producer.stop()
    print(json.dumps({"messages": sent, "seconds": time.perf_counter() - started}))


async def fetch(bootstrap: str, topic: str, count: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got = 0
        started = time.perf_counter()
        while got < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            got += sum(len(batch) for batch in batches.values())
        print(json.dumps({"messages": got, "seconds": time.perf_counter() - started}))
    finally:
        await consumer.stop()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "produce":
        records = read_records(args[4])
        idempotent = args[5] == "1"
        asyncio.run(produce(args[0], args[1], float(args[2]), int(args[3]), records, idempotent))
    else:
        asyncio.run(fetch(args[0], args[1], int(args[2])))
