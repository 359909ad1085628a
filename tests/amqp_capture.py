"""A TCP proxy in front of RabbitMQ that records what clients send, and an AMQP 0-9-1 frame
reader for those bytes: how the tests see exactly what Go's amqp091 client (and ours) puts
on the wire (declarations with their typed argument tables, publish properties, bodies).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

EXCHANGE_DECLARE = (40, 10)
QUEUE_DECLARE = (50, 10)
QUEUE_BIND = (50, 20)
QUEUE_DELETE = (50, 40)
BASIC_CONSUME = (60, 20)
BASIC_PUBLISH = (60, 40)
BASIC_GET = (60, 70)


@dataclass
class Capture:
    """What each client connection sent, in order (one bytes object per connection)."""

    streams: list[bytearray] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def methods(self) -> list[Method]:
        """Every method frame of every connection (publishes with their header and body)."""
        with self.lock:
            streams = [bytes(s) for s in self.streams]
        found: list[Method] = []
        for stream in streams:
            found += parse_methods(stream)
        return found

    def clear(self) -> None:
        with self.lock:
            for stream in self.streams:
                stream.clear()


@contextmanager
def capturing_proxy(url: str) -> Iterator[tuple[str, Capture]]:
    """``url`` with its host and port replaced by a local proxy that records client bytes."""
    parts = urlsplit(url)
    upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
    listener = socket.create_server(("127.0.0.1", 0))
    capture = Capture()
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
        with suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record is not None:
                    with capture.lock:
                        record += data
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(upstream)
            record = bytearray()
            with capture.lock:
                capture.streams.append(record)
            for args in ((client, server, record), (server, client, None)):
                threading.Thread(target=pump, args=args, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    netloc = parts.netloc.rsplit("@", 1)
    address = f"127.0.0.1:{port}"
    proxied = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2
                                        else address))
    try:
        yield proxied, capture
    finally:
        stop.set()
        listener.close()


# ------------------------------------------------------------------------------ frames


@dataclass
class Method:
    """One method frame: (class, method), its channel and arguments; a publish carries the
    raw content header payload (from the property flags on) and the body."""

    key: tuple[int, int]
    channel: int
    args: dict[str, Any]
    properties: bytes = b""
    body: bytes = b""


def parse_methods(stream: bytes) -> list[Method]:
    """The method frames of a client's byte stream, in order."""
    if stream.startswith(PROTOCOL_HEADER):
        stream = stream[len(PROTOCOL_HEADER):]
    methods: list[Method] = []
    at = 0
    while at + 7 <= len(stream):
        kind, channel, size = struct.unpack_from(">BHI", stream, at)
        payload = stream[at + 7:at + 7 + size]
        if len(payload) < size:
            break
        at += 8 + size
        if kind == 1:
            key = struct.unpack_from(">HH", payload)
            methods.append(Method(key, channel, _arguments(key, payload[4:])))
        elif kind == 2 and methods:
            methods[-1].properties = payload[12:]  # flags and properties
        elif kind == 3 and methods:
            methods[-1].body += payload
    return methods


def _arguments(key: tuple[int, int], data: bytes) -> dict[str, Any]:
    reader = _Reader(data)
    if key == EXCHANGE_DECLARE:
        reader.short()
        args = {"exchange": reader.shortstr(), "type": reader.shortstr()}
        args.update(zip(("passive", "durable", "auto_delete", "internal", "nowait"),
                        reader.bits(5), strict=True))
        args["arguments"] = reader.table()
        return args
    if key == QUEUE_DECLARE:
        reader.short()
        args = {"queue": reader.shortstr()}
        args.update(zip(("passive", "durable", "exclusive", "auto_delete", "nowait"),
                        reader.bits(5), strict=True))
        args["arguments"] = reader.table()
        return args
    if key == QUEUE_BIND:
        reader.short()
        args = {"queue": reader.shortstr(), "exchange": reader.shortstr(),
                "routing_key": reader.shortstr(), "nowait": reader.bits(1)[0]}
        args["arguments"] = reader.table()
        return args
    if key == BASIC_PUBLISH:
        reader.short()
        return {"exchange": reader.shortstr(), "routing_key": reader.shortstr(),
                **dict(zip(("mandatory", "immediate"), reader.bits(2), strict=True))}
    if key == BASIC_CONSUME:
        reader.short()
        args = {"queue": reader.shortstr(), "consumer_tag": reader.shortstr()}
        args.update(zip(("no_local", "no_ack", "exclusive", "nowait"), reader.bits(4),
                        strict=True))
        return args
    if key in (BASIC_GET, QUEUE_DELETE):
        reader.short()
        return {"queue": reader.shortstr()}
    return {}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, count: int) -> bytes:
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def short(self) -> int:
        return int(self.unpack(">H"))

    def shortstr(self) -> str:
        return self.take(self.unpack(">B")).decode()

    def bits(self, count: int) -> list[bool]:
        octet = self.unpack(">B")
        return [bool(octet & (1 << i)) for i in range(count)]

    def table(self) -> dict[str, tuple[str, Any]]:
        """A field table as {name: (AMQP type letter, value)}: the type is kept."""
        end = self.at + 4 + self.unpack(">I")
        entries: dict[str, tuple[str, Any]] = {}
        while self.at < end:
            name = self.shortstr()
            kind = self.take(1).decode()
            entries[name] = (kind, self.value(kind))
        return entries

    def value(self, kind: str) -> Any:
        fixed = {"t": ">?", "b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I",
                 "l": ">q", "f": ">f", "d": ">d", "T": ">Q"}
        if kind in fixed:
            return self.unpack(fixed[kind])
        if kind == "S":
            return self.take(self.unpack(">I"))
        if kind == "F":
            return self.table()
        if kind == "V":
            return None
        raise ValueError(f"field type {kind!r} not read by this test helper")
