"""Which failures a worker waits out (transient) and which it eventually dead-letters
(permanent), and the back-off between redeliveries."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WTimeoutError,
)

from siteview_common.consumer import RedeliveryPolicy
from siteview_common.events import PoisonMessageError
from siteview_common.failures import failure_class, is_transient


class _Shape(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Shape.model_validate({"n": "not a number"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


def _raised_from(cause: BaseException) -> RuntimeError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        return exc


def _raised_during(context: BaseException) -> KeyError:
    """A KeyError raised while handling `context`, without `from`: not caused by it."""
    try:
        try:
            raise context
        except BaseException:
            raise KeyError("bug in the handler") from None
    except KeyError as exc:
        exc.__context__ = context
        return exc


TRANSIENT = [
    ConnectionFailure("connection closed"),
    AutoReconnect("connection reset"),
    NetworkTimeout("timed out"),
    NotPrimaryError("not primary"),
    ServerSelectionTimeoutError("no servers"),
    ExecutionTimeout("operation exceeded time limit", 50),
    WriteConcernError("waiting for replication timed out", 64),
    WTimeoutError("waiting for replication timed out", 64),
    OperationFailure("interrupted", 11602, {"errorLabels": ["RetryableWriteError"]}),
    OperationFailure("write conflict", 112, {"errorLabels": ["TransientTransactionError"]}),
    PyMongoError("labelled", error_labels=["RetryableWriteError"]),
    OperationFailure("operation exceeded time limit", 50),  # `.timeout` is true
    BulkWriteError({"writeErrors": [{"index": 0, "code": 50, "errmsg": "time limit"}]}),
    BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 100, "errmsg": "wc"}]}),
    KafkaConnectionError("broker gone"),
    KafkaTimeoutError("no answer"),
    NotLeaderForPartitionError("leader moved"),
    RequestTimedOutError("slow broker"),
    ConnectionError("refused"),
    ConnectionResetError("reset by peer"),
    TimeoutError("deadline"),
    _raised_from(AutoReconnect("connection reset")),
    ExceptionGroup("some failed", [ValueError("bad"), AutoReconnect("reset")]),
]

PERMANENT = [
    ValueError("cannot apply this"),
    KeyError("missing field"),
    TypeError("unexpected shape"),
    PoisonMessageError("never applies"),
    _validation_error(),
    OperationFailure("document failed validation", 121),
    OperationFailure("unknown operator: $foo", 2),
    DuplicateKeyError("E11000 duplicate key", 11000),
    BulkWriteError({"writeErrors": [{"index": 0, "code": 121, "errmsg": "validation"}]}),
    BulkWriteError(
        {
            "writeErrors": [{"index": 0, "code": 121, "errmsg": "validation"}],
            "writeConcernErrors": [{"code": 100, "errmsg": "wc"}],
        }
    ),
    PyMongoError("unlabelled"),
    _raised_from(ValueError("bad input")),
    _raised_during(AutoReconnect("reset")),
    ExceptionGroup("all failed", [ValueError("bad"), KeyError("k")]),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}:{e}")
def test_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)
    assert failure_class(exc) == "transient"


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: f"{type(e).__name__}:{e}")
def test_bad_input_and_bugs_are_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)
    assert failure_class(exc) == "permanent"


def test_a_cycle_of_causes_ends() -> None:
    first, second = ValueError("a"), KeyError("b")
    first.__cause__, second.__cause__ = second, first
    assert not is_transient(first)


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=5),
    cap=st.floats(min_value=0.001, max_value=600),
)
def test_the_back_off_doubles_from_initial_with_jitter_and_is_capped(
    attempt: int, initial: float, cap: float
) -> None:
    policy = RedeliveryPolicy(max_redeliveries=5, initial_seconds=initial, max_seconds=cap)
    delay = policy.delay(attempt)
    exponential = initial * 2.0 ** min(attempt - 1, 64)
    assert min(exponential, cap) <= delay <= min(exponential + initial, cap)


def test_the_back_off_grows_until_the_cap() -> None:
    policy = RedeliveryPolicy(initial_seconds=0.2, max_seconds=10.0)
    assert 0.2 <= policy.delay(1) <= 0.4
    assert 0.4 <= policy.delay(2) <= 0.6
    assert 3.2 <= policy.delay(5) <= 3.4
    assert policy.delay(7) == 10.0
    assert policy.delay(1_000_000) == 10.0
