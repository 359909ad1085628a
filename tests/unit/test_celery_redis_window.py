"""How the window take reads an envelope's tag, exchange and routing key from its end: the
take script's quick reading, and the memo of it gives the same answers as reading in full
(the Redis side is tests/integration/test_celery_redis_window.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.brokers.celery_redis_window import _EndReader, end_fields
from bridge.protocol.celery import encode_task, new_task
from bridge.protocol.kombu_envelope import to_envelope

KOMBU = to_envelope(encode_task(new_task("add", [1, 2])), routing_key="celery",
                    delivery_tag="5b1f0d5e-7a42-4c3e-9c55-0f6e2d1b7a10")


def test_kombus_end_is_read() -> None:
    assert end_fields(KOMBU) == (b"5b1f0d5e-7a42-4c3e-9c55-0f6e2d1b7a10", b"", b"celery")


def test_values_cjson_would_escape_or_the_script_would_not_read_are_left_to_it() -> None:
    for old, new in [(b'"celery"}', b'"a/b"}'), (b'"exchange": ""', b'"exchange": "\\u00e9"'),
                     (b'"priority": 0', b'"priority": -1'), (b'"base64"', b'"base-64"'),
                     (b'"5b1f', b'"caf\xc3\xa9'), (b'"5b1f', b'"\t5b1f'),
                     (b'"delivery_tag"', b'"delivery_tag" ')]:
        assert old in KOMBU
        assert end_fields(KOMBU.replace(old, new)) is None, new
    assert end_fields(KOMBU[:-1]) is None
    assert end_fields(KOMBU + b" ") is None


def test_only_the_first_delivery_info_of_the_last_512_bytes_counts() -> None:
    header = b'"x": {"delivery_info": {"exchange": "", "routing_key": "q"}}, '
    early = KOMBU.replace(b'"properties": {', b'"properties": {' + header)
    assert end_fields(early) is None  # the take script decodes this one in full
    far = KOMBU.replace(b'"properties": {', b'"properties": {' + header + b'"pad": "'
                        + b"p" * 600 + b'", ')  # more than 512 bytes before the end
    assert end_fields(far) == end_fields(KOMBU)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.binary(max_size=4)), max_size=3),
       st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40))
def test_the_memo_answers_as_the_full_reading(edits: list[tuple[int, bytes]], tag: str) -> None:
    reader = _EndReader()
    assert reader(KOMBU) == end_fields(KOMBU)  # remembered
    item = KOMBU.replace(b"5b1f0d5e-7a42-4c3e-9c55-0f6e2d1b7a10", tag.encode())
    for back, inserted in edits:  # bytes put in near the end
        at = max(len(item) - back, 0)
        item = item[:at] + inserted + item[at:]
    assert reader(item) == end_fields(item)
    assert reader(item) == end_fields(item)  # and once more, remembered or not
