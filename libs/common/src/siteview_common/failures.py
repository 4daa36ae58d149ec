"""Which failures go away by themselves.

A worker redelivers a batch that failed. When the cause is *transient* (the database or the
broker is unreachable, slow, electing a primary, or short of replicas) the same batch will
apply once the outage ends, so it is redelivered for as long as that takes and never
dead-lettered. Anything else is *permanent*: the same input fails the same way every time,
and after a bounded number of redeliveries the culprit is parked in the dead-letter queue.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)

#: MongoDB error labels that promise the operation may succeed when simply tried again.
TRANSIENT_LABELS = ("RetryableWriteError", "TransientTransactionError")

#: ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError and
#: ServerSelectionTimeoutError; the builtin ConnectionError and TimeoutError are what socket
#: and asyncio code raise for the same conditions.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    ExecutionTimeout,
    WriteConcernError,
    KafkaError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when `exc` says "try again later" rather than "this input can never apply".

    An exception raised `from` a transient one is transient too, and so is an exception group
    with a transient member (one unreachable server is enough to fail the lot).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__
    return False


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(is_transient(inner) for inner in exc.exceptions)
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if not isinstance(exc, PyMongoError):
        return False
    if exc.timeout or any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        # Only the write concern failed (too few replicas acknowledged), not the data.
        return bool(details.get("writeConcernErrors")) and not details.get("writeErrors")
    return False


def failure_class(exc: BaseException) -> str:
    """`transient` or `permanent`: the label metrics and logs use."""
    return "transient" if is_transient(exc) else "permanent"
