"""gocraft/work's job: its JSON exactly as Go writes it, read as any writer left it.

Go writes fields in struct order (``name,id,t,args[,unique,unique_key][,fails,err,
failed_at]``), map keys sorted, ``<>&`` escaped, ``args:null`` for no args. Jobs that went
through gocraft's Lua (requeued from retry or scheduled) come back re-encoded by cjson: any
key order, 14 significant digits, ``\\/``; they are read the same (reference §2).
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from bridge.errors import DecodeError
from bridge.gocraft.keys import GocraftKeys
from bridge.protocol import gojson
from bridge.protocol.gojson import JSONNumber, Struct


def new_id() -> str:
    """24 lowercase hex characters, as gocraft's ``makeIdentifier``."""
    return secrets.token_hex(12)


def now_epoch() -> int:
    """Integer epoch seconds, gocraft's only clock."""
    return int(time.time())


@dataclass(frozen=True, slots=True)
class GocraftJob:
    """One job (``job.go``'s ``Job``): args are the free-form JSON map, or None."""

    name: str
    id: str
    t: int
    args: dict[str, Any] | None = None
    unique: bool = False
    unique_key: str = ""
    fails: int = 0
    err: str = ""
    failed_at: int = 0

    @classmethod
    def new(cls, name: str, args: dict[str, Any] | None = None) -> GocraftJob:
        return cls(name=name, id=new_id(), t=now_epoch(), args=args)

    def encode(self) -> bytes:
        """``json.Marshal(job)`` byte for byte."""
        fields: list[tuple[str, Any]] = []
        if self.name:
            fields.append(("name", self.name))
        fields += [("id", self.id), ("t", self.t), ("args", self.args)]
        if self.unique:
            fields.append(("unique", True))
        if self.unique_key:
            fields.append(("unique_key", self.unique_key))
        if self.fails:
            fields.append(("fails", self.fails))
        if self.err:
            fields.append(("err", self.err))
        if self.failed_at:
            fields.append(("failed_at", self.failed_at))
        return gojson.dumps(Struct(fields))

    def failed(self, error: str, at: int | None = None) -> GocraftJob:
        """The job after a failure, as Go's ``job.failed`` leaves it: one more fail, the
        error text, the time; args as Go re-encodes them (numbers as float64)."""
        return replace(self, fails=self.fails + 1, err=error,
                       failed_at=now_epoch() if at is None else at,
                       args=go_decoded(self.args))

    @classmethod
    def decode(cls, raw: bytes | str) -> GocraftJob:
        """Read a job from its list or set; a clear error for what is not one."""
        try:
            data = gojson.loads(raw)
        except Exception as exc:
            raise DecodeError(f"not a gocraft/work job: {exc}") from None
        if not isinstance(data, dict):
            raise DecodeError("not a gocraft/work job: not a JSON object")
        args = data.get("args")
        if isinstance(args, list) and not args:  # cjson writes an empty map as []
            args = {}
        if args is not None and not isinstance(args, dict):
            raise DecodeError(f"gocraft/work job {data.get('id')!r}: args is not an object")
        job_id = data.get("id")
        if not isinstance(job_id, str):
            raise DecodeError("gocraft/work job without a string id")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise DecodeError(f"gocraft/work job {job_id!r}: name is not a string")
        return cls(name=name, id=job_id, t=_integer(data.get("t")), args=args,
                   unique=data.get("unique") is True,
                   unique_key=str(data.get("unique_key") or ""),
                   fails=_integer(data.get("fails")), err=str(data.get("err") or ""),
                   failed_at=_integer(data.get("failed_at")))


def _integer(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return 0


def go_decoded(value: Any) -> Any:
    """``value`` as Go holds it after decoding into ``interface{}``: every number a float64
    (integers beyond 2**53 lose precision, as in Go)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, JSONNumber):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {key: go_decoded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [go_decoded(item) for item in value]
    return value


def unique_key(keys: GocraftKeys, name: str, key_map: dict[str, Any] | None) -> str:
    """``<ns>:unique:<name>:`` + Go's ``json.Encoder.Encode(key_map)`` (a trailing newline);
    nil args: the prefix alone (reference §9)."""
    if key_map is None:
        return keys.unique_prefix(name)
    return keys.unique_prefix(name) + gojson.dumps(key_map).decode("utf-8") + "\n"


def backoff(fails: int, rand: int | None = None) -> int:
    """gocraft's default back-off in seconds after the ``fails``-th failure (Sidekiq's):
    ``fails**4 + 15 + rand[0,29] * (fails + 1)``."""
    draw = secrets.randbelow(30) if rand is None else rand
    return fails ** 4 + 15 + draw * (fails + 1)
