"""bridge.resp.pack_large writes the bytes hiredis's pack_command writes, for any command of
bytes, str, int and float arguments."""

from __future__ import annotations

from typing import Any

import pytest
from hiredis import pack_command
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.resp import pack_large

_ARGS = st.one_of(st.binary(max_size=300), st.text(max_size=80),
                  st.integers(min_value=-(2**80), max_value=2**80),
                  st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=12), st.lists(_ARGS, max_size=200))
def test_pack_large_writes_hiredis_bytes(name: str, args: list[Any]) -> None:
    command = (name, *args)
    try:
        expected = pack_command(command)
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        with pytest.raises(UnicodeEncodeError):
            pack_large(command)
        return
    assert pack_large(command) == expected


def test_a_batch_script_call_with_repeated_lengths() -> None:
    # the relay's shape: thousands of arguments, many of one length (the heads reused)
    command = ("EVALSHA", "ab" * 20, 1000,
               *[f"{i:036d}" for i in range(1000)], 3600,
               *[b'{"TaskUUID":"%036d","TaskName":' % i for i in range(1000)],
               *([b"x" * 1300, "é" * 7, 0, -1, 2.5] * 200))
    assert pack_large(command) == pack_command(command)
