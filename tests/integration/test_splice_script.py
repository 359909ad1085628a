"""The backend's splice-merge script finds CreatedAt as the plain unanchored pattern did."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.backends.redis import _SPLICE_MANY_SCRIPT

# The script before the CreatedAt search was made cheaper: the reference.
REFERENCE = _SPLICE_MANY_SCRIPT.replace(
    _SPLICE_MANY_SCRIPT[_SPLICE_MANY_SCRIPT.index("      -- the leftmost match"):
                        _SPLICE_MANY_SCRIPT.index("    end\n    if current and")],
    """      created = string.match(current, ',"CreatedAt":("[^"\\\\]*"),"TTL":%-?%d+}$')\n""")

HEAD, MIDDLE, TAIL = b'{"TaskUUID":"t","TaskName":', b',"State":"STARTED","Results":null,' \
    b'"Error":"","CreatedAt":', b',"TTL":0}'
STORED = [
    b'{"TaskUUID":"t","TaskName":"n","State":"PENDING","Results":null,"Error":"",'
    b'"CreatedAt":"2024-05-06T07:08:09.123456789Z","TTL":0}',
    b'{"TaskUUID":"t","TaskName":"n","State":"SUCCESS","Results":[{"Type":"m","Value":'
    b'{"CreatedAt":"x","TTL":1}}],"Error":"","CreatedAt":"2024-05-06T07:08:09Z","TTL":-5}',
    b'{"TaskUUID":"t","TaskName":"n","State":"S","Results":null,"Error":",\\"CreatedAt\\":\\"",'
    b'"CreatedAt":"c","TTL":0}',
    b'{"TaskUUID":"t","TaskName":"n","CreatedAt":"a","TTL":1},"CreatedAt":"b","TTL":2}',
    b'{"TaskUUID":"t","TaskName":"n","State":"S","CreatedAt":"a\\"b","TTL":0}',
    b'{"TaskUUID":"t","TaskName":"n","State":"S","CreatedAt":"a","TTL":0} ',
    b'{"TaskUUID":"t","TaskName":"n","State":"S","CreatedAt":"a","TTL":x}',
    b'{"TaskUUID":"t","TaskName":"n\\"","State":"S","CreatedAt":"a","TTL":0}',
    b',"CreatedAt":"',
    b'',
]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def _both(client: redis.Redis, stored: bytes | None) -> list[object]:
    results: list[object] = []
    for script in (_SPLICE_MANY_SCRIPT, REFERENCE):
        client.delete("splice:t")
        if stored is not None:
            client.set("splice:t", stored)
        reply = client.eval(script, 1, "splice:t", 60, "M", HEAD, MIDDLE, TAIL)
        results.append((reply, client.get("splice:t")))
    return results


@pytest.mark.parametrize("stored", [*STORED, None])
def test_splice_equals_the_reference(client: redis.Redis, stored: bytes | None) -> None:
    ours, reference = _both(client, stored)
    assert ours == reference


_pieces = st.sampled_from([b',"CreatedAt":"', b'","TTL":', b'0', b'-', b'}', b'"', b'\\',
                           b'a', b',"TTL":1}', b'{"TaskUUID":"t","TaskName":"n","State":'])


@given(st.lists(_pieces, max_size=12).map(b"".join))
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_splice_equals_the_reference_on_random_values(client: redis.Redis,
                                                      stored: bytes) -> None:
    ours, reference = _both(client, stored)
    assert ours == reference
