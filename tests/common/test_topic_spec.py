"""How topics are specified at creation (partitions, replication factor, min.insync.replicas)
and how the broker's per-topic answer is read."""

from __future__ import annotations

import pytest
from aiokafka.protocol.admin import CreateTopicsResponse_v0, CreateTopicsResponse_v3

from siteview_common.kafka import TopicSetupError, TopicSpec, _topic_errors
from siteview_common.settings import KafkaSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_TOPIC_PARTITIONS", "KAFKA_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS"):
        monkeypatch.delenv(name, raising=False)


def settings(**values: object) -> KafkaSettings:
    return KafkaSettings(app_env="development", **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("brokers", "replication", "min_insync"),
    [(1, 1, 1), (2, 2, 1), (3, 3, 2), (7, 3, 2), (0, 1, 1)],
)
def test_defaults_follow_the_size_of_the_cluster(
    brokers: int, replication: int, min_insync: int
) -> None:
    spec = TopicSpec.resolve(settings(), brokers)
    assert spec == TopicSpec(12, replication, min_insync)


def test_explicit_settings_win() -> None:
    spec = TopicSpec.resolve(settings(kafka_topic_partitions=4, kafka_replication_factor=5), 1)
    assert spec == TopicSpec(4, 5, 4)
    spec = TopicSpec.resolve(
        settings(kafka_replication_factor=3, kafka_min_insync_replicas=3), brokers=3
    )
    assert spec == TopicSpec(12, 3, 3)


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("KAFKA_MIN_INSYNC_REPLICAS", "2")
    loaded = KafkaSettings()
    assert (loaded.kafka_replication_factor, loaded.kafka_min_insync_replicas) == (2, 2)


def test_more_in_sync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(TopicSetupError, match=r"KAFKA_MIN_INSYNC_REPLICAS \(3\) is larger"):
        TopicSpec.resolve(settings(kafka_replication_factor=2, kafka_min_insync_replicas=3), 5)


def test_min_insync_replicas_is_a_topic_config() -> None:
    topic = TopicSpec(6, 3, 2).new_topic("clerk.users.v1")
    assert (topic.name, topic.num_partitions, topic.replication_factor) == (
        "clerk.users.v1",
        6,
        3,
    )
    assert topic.topic_configs == {"min.insync.replicas": "2"}


def test_an_existing_topic_is_fine_any_other_error_names_the_topic() -> None:
    response = CreateTopicsResponse_v3(
        0,
        [
            ("created", 0, None),
            ("raced", 36, "Topic 'raced' already exists."),
            ("refused", 38, "Replication factor: 3 larger than available brokers: 1."),
        ],
    )
    assert _topic_errors(response) == [
        "refused (INVALID_REPLICATION_FACTOR: "
        "Replication factor: 3 larger than available brokers: 1.)"
    ]
    assert _topic_errors(CreateTopicsResponse_v3(0, [("a", 0, None), ("b", 36, "x")])) == []


def test_an_answer_without_messages_uses_the_error_description() -> None:
    response = CreateTopicsResponse_v0([("refused", 37)])
    assert _topic_errors(response) == [
        "refused (INVALID_PARTITIONS: Number of partitions is invalid.)"
    ]
