"""MongoDB wire-protocol framing for the stand-in: OP_MSG, OP_QUERY/OP_REPLY, BSON via PyMongo.

Only what PyMongo 4.x sends to a standalone server is understood: OP_MSG (kind-0 body plus
kind-1 document sequences, optional CRC-32C checksum which is stripped, not verified) and the
legacy OP_QUERY used for the initial handshake. OP_COMPRESSED is never negotiated and rejected.
"""

from __future__ import annotations

import struct
from typing import Any

import bson
from bson.errors import BSONError

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH_SIZE = 100_000

CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
_KNOWN_REQUIRED_BITS = CHECKSUM_PRESENT | MORE_TO_COME

QUERY_FAILURE = 1 << 1  # OP_REPLY responseFlags bit

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")


class ProtocolError(Exception):
    """A message that cannot be parsed; the connection is answered once and closed."""


def _document(data: bytes, pos: int, end: int) -> tuple[dict[str, Any], int]:
    if pos + 4 > end:
        raise ProtocolError("truncated BSON document")
    (size,) = _I32.unpack_from(data, pos)
    if size < 5 or pos + size > end:
        raise ProtocolError("BSON document length out of bounds")
    return bson.decode(data[pos : pos + size]), pos + size


def _cstring(data: bytes, pos: int, end: int) -> tuple[str, int]:
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise ProtocolError("unterminated C string")
    return data[pos:nul].decode("utf-8"), nul + 1


def decode_op_msg(payload: bytes) -> tuple[int, dict[str, Any]]:
    """Return (flagBits, command body with document sequences merged in as lists)."""
    try:
        (flags,) = _U32.unpack_from(payload, 0)
        unknown = flags & 0xFFFF & ~_KNOWN_REQUIRED_BITS
        if unknown:
            raise ProtocolError(f"unknown required OP_MSG flag bits: {unknown:#x}")
        end = len(payload) - (4 if flags & CHECKSUM_PRESENT else 0)
        pos, body, sequences = 4, None, {}
        while pos < end:
            kind = payload[pos]
            pos += 1
            if kind == 0:
                if body is not None:
                    raise ProtocolError("OP_MSG has more than one kind-0 section")
                body, pos = _document(payload, pos, end)
            elif kind == 1:
                (size,) = _I32.unpack_from(payload, pos)
                section_end = pos + size
                if size < 5 or section_end > end:
                    raise ProtocolError("document sequence length out of bounds")
                identifier, doc_pos = _cstring(payload, pos + 4, section_end)
                docs = []
                while doc_pos < section_end:
                    doc, doc_pos = _document(payload, doc_pos, section_end)
                    docs.append(doc)
                if identifier in sequences:
                    raise ProtocolError(f"duplicate document sequence {identifier!r}")
                sequences[identifier] = docs
                pos = section_end
            else:
                raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    except (struct.error, IndexError, UnicodeDecodeError, BSONError) as exc:
        raise ProtocolError(f"malformed OP_MSG: {exc}") from exc
    if body is None:
        raise ProtocolError("OP_MSG has no kind-0 body section")
    for identifier, docs in sequences.items():
        if identifier in body:
            raise ProtocolError(f"field {identifier!r} is both in the body and a sequence")
        body[identifier] = docs
    return flags, body


def decode_op_query(payload: bytes) -> tuple[str, dict[str, Any]]:
    """Return (fullCollectionName, query document) of an OP_QUERY."""
    try:
        namespace, pos = _cstring(payload, 4, len(payload))
        pos += 8  # numberToSkip, numberToReturn
        query, _ = _document(payload, pos, len(payload))
    except (struct.error, UnicodeDecodeError, BSONError) as exc:
        raise ProtocolError(f"malformed OP_QUERY: {exc}") from exc
    return namespace, query


def encode_op_msg(request_id: int, response_to: int, doc: dict[str, Any]) -> bytes:
    body = _U32.pack(0) + b"\x00" + bson.encode(doc)
    return HEADER.pack(HEADER.size + len(body), request_id, response_to, OP_MSG) + body


def encode_op_reply(
    request_id: int, response_to: int, doc: dict[str, Any], flags: int = 0
) -> bytes:
    # responseFlags, cursorID, startingFrom, numberReturned, documents
    body = struct.pack("<iqii", flags, 0, 0, 1) + bson.encode(doc)
    return HEADER.pack(HEADER.size + len(body), request_id, response_to, OP_REPLY) + body
