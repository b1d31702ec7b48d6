"""Reading and writing large messages a slice at a time, so that one big call does not stall the others.

A request may be as big as ``max_message_bytes`` (32 MiB by default: 1,000 long documents). Parsing it (protobuf or
JSON) and turning its texts into Python strings runs in C under the GIL, so a thread would not free the event loop:
done in one go it holds every other call on the gateway for ~50-140 ms (``python -m bench.big_message``). A message
over ``INLINE_BYTES`` is read and written here in slices of about ``SLICE_BYTES``, the event loop free between
slices (other calls' I/O, their tokenizing and scoring go on); a smaller one in one go, as before, at no extra cost.

Both rest on the formats' own rules, nothing hand-parsed beyond framing:
- protobuf: a message is the merge of its serialized parts cut at top-level field boundaries (repeated fields
  append, the last singular value wins), so the parts are merged one by one; the serialized response is its head's
  bytes followed by its repeated field's items, serialized a slice at a time.
- JSON: the body is decoded a slice at a time, its object read member by member and a top-level array element by
  element with the json module's own scanner (``raw_decode``); whatever this does not read as an object goes to
  ``json.loads`` for its verdict and message.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from typing import Any, Sequence

import grpc
from google.protobuf.message import DecodeError, Message

from ara_reranker_server.errors import InvalidRequest

__all__ = ["INLINE_BYTES", "SLICE_BYTES", "is_large", "add_handlers", "parse_proto", "strings", "serialize_proto",
           "loads_object", "json_chunks"]

INLINE_BYTES = 1 << 20  # messages up to this size are read and written in one go
SLICE_BYTES = 1 << 20  # about this much is parsed, converted or written between two turns of the event loop


def is_large(size: int) -> bool:
    return size > INLINE_BYTES


# protobuf ---------------------------------------------------------------------------------------------------


def add_handlers(server: grpc.aio.Server, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Serve ``service``'s methods, registered as the generated ``add_*_to_server`` does. A handler made without a
    request deserializer and response serializer takes and answers bytes: its method reads and writes its
    messages with ``parse_proto`` and ``serialize_proto``."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


async def parse_proto(message_class: type[Message], raw: bytes) -> Message:
    """``message_class.FromString(raw)``; a large message a slice at a time. InvalidRequest when ``raw`` is not
    such a message."""
    try:
        if not is_large(len(raw)):
            return message_class.FromString(raw)
        message = message_class()
        for start, end in _field_slices(raw):
            message.MergeFromString(raw[start:end])
            await asyncio.sleep(0)
        return message
    except DecodeError as exc:
        raise InvalidRequest(f"the request is not a valid {message_class.DESCRIPTOR.full_name} message: {exc}") from None


async def strings(values: Sequence[str], size: int) -> Sequence[str]:
    """A repeated string field (``size``: the bytes of the message holding it) as Python strings: a large one a
    slice at a time into a list; a small one as it is (protobuf converts each item when read)."""
    if not is_large(size) or not values:
        return values
    step = max(1, len(values) * SLICE_BYTES // size)
    out: list[str] = []
    for i in range(0, len(values), step):
        out.extend(values[i:i + step])
        await asyncio.sleep(0)
    return out


async def serialize_proto(head: Message, field: str, items: Sequence[Message], large: bool) -> bytes:
    """The serialization of ``head`` with ``items`` as its repeated ``field`` (empty in ``head``); when ``large``
    the items a slice at a time."""
    message_class = type(head)
    if not large:
        getattr(head, field).extend(items)
        return head.SerializeToString()
    parts, batch, batch_bytes = [head.SerializeToString()], [], 0
    for item in items:
        batch.append(item)
        batch_bytes += item.ByteSize()
        if batch_bytes >= SLICE_BYTES:
            parts.append(message_class(**{field: batch}).SerializeToString())
            batch, batch_bytes = [], 0
            await asyncio.sleep(0)
    if batch:
        parts.append(message_class(**{field: batch}).SerializeToString())
    return b"".join(parts)


def _field_slices(raw: bytes) -> list[tuple[int, int]]:
    """``raw`` cut at top-level field boundaries into slices of about SLICE_BYTES (one slice when a field's framing
    is not valid: the parser then reports it)."""
    slices, start, i, end = [], 0, 0, len(raw)
    try:
        while i < end:
            key, i = _varint(raw, i)
            wire_type = key & 7
            if wire_type == 0:
                _, i = _varint(raw, i)
            elif wire_type == 1:
                i += 8
            elif wire_type == 2:
                length, i = _varint(raw, i)
                i += length
            elif wire_type == 5:
                i += 4
            else:  # groups (not in these protos) or not protobuf
                return [(0, end)]
            if i > end:
                return [(0, end)]
            if i - start >= SLICE_BYTES:
                slices.append((start, i))
                start = i
    except IndexError:  # a varint running past the end
        return [(0, end)]
    if start < end:
        slices.append((start, end))
    return slices


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


# JSON -------------------------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _NotRead(Exception):
    """The text is not an object this module reads: json.loads gives the verdict."""


async def loads_object(raw: bytes) -> Any:
    """``json.loads(raw)``; a large body a slice at a time when it is an object (else as json.loads does, with its
    errors: UnicodeDecodeError, JSONDecodeError)."""
    if not is_large(len(raw)):
        return json.loads(raw)
    try:
        return await _object(_Reader(raw))
    except (_NotRead, json.JSONDecodeError, UnicodeDecodeError):  # json.loads's verdict, and its message
        return json.loads(raw)


class _Reader:
    """A JSON text read from its bytes a slice at a time: ``text[i:]`` is what is decoded and not yet read. Whole
    values are read by the json module's scanner; one cut by the slice's end is read again once more is decoded."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.decoded_bytes = raw, 0
        self.decoder = codecs.getincrementaldecoder(json.detect_encoding(raw))("surrogatepass")
        self.text, self.i = "", 0

    async def more(self) -> bool:
        """Decode at least a slice, and at least as much as is left unread (a value longer than a slice costs
        linear time); then give the event loop a turn. False at the end."""
        if self.decoded_bytes >= len(self.raw):
            return False
        pieces, wanted, got = [self.text[self.i:]], max(SLICE_BYTES, len(self.text) - self.i), 0
        while got < wanted and self.decoded_bytes < len(self.raw):
            piece = self.raw[self.decoded_bytes:self.decoded_bytes + SLICE_BYTES]
            self.decoded_bytes += len(piece)
            pieces.append(self.decoder.decode(piece, final=self.decoded_bytes >= len(self.raw)))
            got += len(piece)
        self.text, self.i = "".join(pieces), 0
        await asyncio.sleep(0)
        return True

    async def peek(self) -> str:
        """The next character after whitespace, not consumed ("" at the end)."""
        while True:
            self.i = _WHITESPACE.match(self.text, self.i).end()
            if self.i < len(self.text):
                return self.text[self.i]
            if not await self.more():
                return ""

    async def take(self) -> str:
        """The next character after whitespace, consumed."""
        char = await self.peek()
        self.i += len(char)
        return char

    async def value(self) -> Any:
        await self.peek()
        while True:
            at_end = self.decoded_bytes >= len(self.raw)
            try:
                value, end = _DECODER.raw_decode(self.text, self.i)
                if end < len(self.text) or at_end:  # a number at the text's end may go on in the next slice
                    self.i = end
                    return value
            except json.JSONDecodeError:
                if at_end:
                    raise
            await self.more()


async def _object(reader: _Reader) -> dict[str, Any]:
    if await reader.take() != "{":
        raise _NotRead
    result: dict[str, Any] = {}
    if await reader.peek() == "}":
        await reader.take()
    else:
        while True:
            key = await reader.value()
            if not isinstance(key, str) or await reader.take() != ":":
                raise _NotRead
            if await reader.peek() == "[":
                await reader.take()
                result[key] = await _array(reader)
            else:
                result[key] = await reader.value()
            delimiter = await reader.take()
            if delimiter == "}":
                break
            if delimiter != ",":
                raise _NotRead
    if await reader.peek() != "":
        raise _NotRead
    return result


async def _array(reader: _Reader) -> list[Any]:
    """The rest of an array whose "[" is read, element by element."""
    items: list[Any] = []
    if await reader.peek() == "]":
        await reader.take()
        return items
    while True:
        items.append(await reader.value())
        delimiter = await reader.take()
        if delimiter == "]":
            return items
        if delimiter != ",":
            raise _NotRead


async def json_chunks(payload: Any, dumps) -> list[bytes]:
    """``dumps(payload)`` in UTF-8 as chunks of about SLICE_BYTES, written a slice at a time: the items of a top-level
    array, or of the arrays that are a top-level object's values, one by one (``dumps`` writes without spaces, as
    ``separators=(",", ":")``). Sent one after the other, so that no buffer of the whole answer is ever built."""
    chunks: list[bytes] = []
    pending: list[bytes] = []
    pending_bytes = 0

    async def put(piece: bytes) -> None:
        nonlocal pending_bytes
        pending.append(piece)
        pending_bytes += len(piece)
        if pending_bytes >= SLICE_BYTES:
            chunks.append(b"".join(pending))
            pending.clear()
            pending_bytes = 0
            await asyncio.sleep(0)

    async def array(items: list[Any]) -> None:
        await put(b"[")
        for n, item in enumerate(items):
            await put((b"," if n else b"") + dumps(item).encode())
        await put(b"]")

    if isinstance(payload, list):
        await array(payload)
    elif isinstance(payload, dict):
        for n, (key, value) in enumerate(payload.items()):
            await put((b"," if n else b"{") + dumps(str(key)).encode() + b":")
            if isinstance(value, list):
                await array(value)
            else:
                await put(dumps(value).encode())
        await put(b"}" if payload else b"{}")
    else:
        await put(dumps(payload).encode())
    if pending:
        chunks.append(b"".join(pending))
    return chunks
