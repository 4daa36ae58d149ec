"""Poison among good events: an event its worker can never apply is parked in the topic's DLQ
with the reason, and its partition moves on: the same users' later events still apply."""

from __future__ import annotations

import random

import pytest
from faults.kit import System, WorkerTally, dead_lettered, deliver_until_acked
from faults.reliability import Record

from support import Delivery, UserVersions, new_svix_id, user_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

POISON = 5


def test_6_poison_is_dead_lettered_and_its_partition_continues(
    system: System, record: Record
) -> None:
    scenario = record("6", "6. Poison message: dead-lettered, the partition continues")
    scenario.injected = (
        f"{POISON} signed `user.deleted` events with `deleted: false` (valid envelopes the "
        "users worker can never apply), each keyed by a user whose events flow before and "
        "after it on the same partition"
    )
    flow, gateway = UserVersions(users=50), system.gateway()
    workers = WorkerTally(system.worker.url)
    deliver_until_acked(gateway, flow.next_round() + flow.next_round())
    poison = []
    for user_id in random.sample(flow.user_ids, POISON):
        event = user_event("user.deleted", user_id, updated_at=1)
        event["data"]["deleted"] = False
        poison.append(Delivery(new_svix_id(), event))
    deliver_until_acked(gateway, poison)
    deliver_until_acked(gateway, flow.next_round() + flow.next_round())  # behind the poison

    poison_ids = {d.svix_id for d in poison}
    counts = system.settle(scenario, gateway, flow, workers, parked=poison_ids)
    parked = dead_lettered(system.kafka, poison_ids)
    scenario.observe(
        f"{len(parked)} of the {POISON} poison events found in clerk.users.v1.dlq; the users "
        "they were keyed by are on their newest version (events behind the poison applied)"
    )
    assert parked == poison_ids
    assert counts["dead-lettered"] == POISON
