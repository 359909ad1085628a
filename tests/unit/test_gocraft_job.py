"""gocraft/work's job JSON, unique keys, back-off, options and priority sampling, checked
against the bytes the reference observed from Go's encoding/json (gocraft-work.md §2, §9)."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from bridge.config.keys import ConfigError
from bridge.errors import DecodeError
from bridge.gocraft.job import GocraftJob, backoff, go_decoded, unique_key
from bridge.gocraft.keys import GocraftKeys, prefix_of
from bridge.gocraft.options import JobOptions, sample_order
from bridge.protocol.gojson import JSONNumber


def test_go_bytes_of_a_job_with_args() -> None:
    job = GocraftJob(name="send_email", id="0123456789abcdef01234567", t=1700000000,
                     args={"subject": "hi <b>&</b>", "customer_id": 4, "address": "a@b.c"})
    assert job.encode() == (
        b'{"name":"send_email","id":"0123456789abcdef01234567","t":1700000000,'
        b'"args":{"address":"a@b.c","customer_id":4,"subject":"hi \\u003cb\\u003e\\u0026'
        b'\\u003c/b\\u003e"}}')


def test_go_bytes_without_args_and_after_a_failure() -> None:
    assert GocraftJob(name="noargs", id="0123456789abcdef01234567", t=1700000000).encode() \
        == b'{"name":"noargs","id":"0123456789abcdef01234567","t":1700000000,"args":null}'
    job = GocraftJob(name="n", id="i", t=1, args={"big": 12345678901234567890, "f": 1,
                                                  "i": 3})
    assert job.failed("boom", 1700000001).encode() == (
        b'{"name":"n","id":"i","t":1,"args":{"big":12345678901234567000,"f":1,"i":3},'
        b'"fails":1,"err":"boom","failed_at":1700000001}')


def test_go_bytes_of_a_unique_job() -> None:
    keys = GocraftKeys("work")
    key = unique_key(keys, "clear_cache", {"object_id_": "123"})
    assert key == 'work:unique:clear_cache:{"object_id_":"123"}\n'
    job = GocraftJob(name="clear_cache", id="id", t=1, args={"object_id_": "123"}, unique=True,
                     unique_key=key)
    assert job.encode() == (b'{"name":"clear_cache","id":"id","t":1,"args":{"object_id_":'
                            b'"123"},"unique":true,"unique_key":"work:unique:clear_cache:'
                            b'{\\"object_id_\\":\\"123\\"}\\n"}')
    assert unique_key(keys, "x", None) == "work:unique:x:"


def test_reads_what_cjson_rewrote() -> None:
    raw = (b'{"t":1700000005,"args":{"n":1.2345678901234e+14,"path":"a\\/b"},"name":"n",'
           b'"id":"abc","fails":2,"err":"e","failed_at":1700000001}')
    job = GocraftJob.decode(raw)
    assert (job.name, job.id, job.t, job.fails, job.err) == ("n", "abc", 1700000005, 2, "e")
    assert job.args is not None and job.args["path"] == "a/b"
    assert isinstance(job.args["n"], JSONNumber) and float(job.args["n"]) == 1.2345678901234e14
    assert GocraftJob.decode(b'{"name":"n","id":"i","t":1,"args":[]}').args == {}
    assert GocraftJob.decode(b'{"name":"n","id":"i","t":1,"args":null}').args is None


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"name":"n","t":1}',
                                 b'{"name":"n","id":"i","t":1,"args":"x"}'])
def test_what_is_no_job_is_a_clear_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="gocraft/work job"):
        GocraftJob.decode(raw)


def test_round_trip_and_go_decoded_numbers() -> None:
    job = GocraftJob.new("x", {"a": [1, 2.5, {"b": True}], "c": None})
    assert GocraftJob.decode(job.encode()) == job
    assert len(job.id) == 24 and int(job.id, 16) >= 0
    assert go_decoded({"a": [1, JSONNumber("2.5")]}) == {"a": [1.0, 2.5]}


def test_backoff_is_sidekiqs() -> None:
    assert [backoff(1, 0), backoff(1, 29), backoff(2, 0), backoff(3, 29)] == [16, 74, 31, 212]
    assert all(16 <= backoff(1) <= 74 for _ in range(200))


def test_namespace_prefix() -> None:
    assert [prefix_of("work"), prefix_of("work:"), prefix_of("")] == ["work:", "work:", ""]
    keys = GocraftKeys("{app}")
    assert keys.in_progress("job", "p1") == "{app}:jobs:job:p1:inprogress"
    assert keys.heartbeat("p1") == "{app}:worker_pools:p1"


def test_job_options() -> None:
    assert JobOptions.parse("mail,max_fails=2,skip_dead,max_concurrency=3,priority=50") == (
        "mail", JobOptions(priority=50, max_fails=2, skip_dead=True, max_concurrency=3))
    assert JobOptions(max_fails=0).attempts == 4
    with pytest.raises(ConfigError, match="unknown option"):
        JobOptions.parse("mail,retries=3")
    with pytest.raises(ConfigError, match="out of range"):
        JobOptions(priority=0)


def test_priority_sampling_follows_the_weights() -> None:
    rand = random.Random(7)
    firsts = Counter(sample_order({"a": 1, "b": 9}, rand.random)[0] for _ in range(5000))
    assert 0.85 < firsts["b"] / 5000 < 0.95
    orders = {tuple(sample_order({"a": 1, "b": 1, "c": 1}, rand.random)) for _ in range(300)}
    assert orders == set(itertools.permutations("abc"))
