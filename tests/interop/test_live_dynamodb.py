"""Live interop on machinery's DynamoDB result backend (moto's server mode; tasks on Redis)
with real Go machinery v1 and v2: Go cannot tell our side from Go's.

machinery stringifies results on DynamoDB (``fmt.Sprintf("%v")``), so Go's own
``AsyncResult`` reads back only ``string`` results and reports ``5 is not int64`` for the
rest, and a Go chord callback cannot reflect its members' results: those are Go's behaviour
with Go workers, and it is the same with ours (compared check by check). Ours reads typed
values back wherever the text has one reading:

- Go producer → our worker → Go's AsyncResult.GetWithTimeout: the same verdicts as with a
  Go worker, failure texts included (our chords run where Go's callback cannot);
- our producer → a Go worker → our AsyncResult.get: typed values, Go's failure text, chain,
  group, retry, ETA;
- a Go worker and ours on one queue: a chord of 50 from our producer, repeated, fires its
  callback once; Go's producer's chord of 50 is triggered and never runs twice;
- Go's ``fmt`` itself prints random floats exactly as we write them.
"""

from __future__ import annotations

import random
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge import TaskFailed
from bridge.errors import ArgTranslationError
from bridge.protocol.dynamodb_items import (
    go_text,
    group_meta_from_item,
    read_text,
    task_state_from_item,
)
from bridge.types import to_python, to_wire
from tests.backend_servers import MotoServer
from tests.interop.conftest import VERSIONS
from tests.interop.dynamodb_go import (
    backend_url,
    fresh_tables,
    produce,
    python_app,
    scan,
    settle,
    verdicts,
)
from tests.interop.go_processes import go_worker
from tests.interop.interop_app import echo_task_name
from tests.interop.python_corpus import EDGE
from tests.worker_thread import worker_thread


@pytest.fixture()
def redis_url(private_redis_url: str) -> str:
    """A Redis of this module's own: its tests count chord keys and wait for delayed tasks,
    and must not see what earlier tests left in the session's Redis."""
    return private_redis_url


pytestmark = pytest.mark.go

TIMING = ("chord/group_meta", "chord/counter", "chord/counter_later")
"""Read as soon as Go's ChordAsyncResult gave up (at once: it cannot read the members'
int64 results) and 500 ms later: before or after the trigger and our callback."""


def fresh_queue() -> str:
    return f"ddb_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producer_sees_our_worker_as_a_go_worker(version: str, harness: dict[str, Path],
                                                    moto_server: MotoServer,
                                                    redis_url: str) -> None:
    """Every check of ``produce`` gets the same verdict from our worker as from Go's (the
    chord last: a Go worker whose callback fails to reflect stops its consumer a while);
    the chord's callback, which Go's worker cannot run, runs once on ours."""
    backend = backend_url(moto_server)
    reports, counts = {}, {}
    for who in ("go", "python"):
        fresh_tables(moto_server)
        queue = fresh_queue()
        worker = go_worker(harness[version], redis_url, queue, 8, backend=backend) \
            if who == "go" else worker_thread(python_app(moto_server, redis_url, queue), 8)
        with worker:
            lines = produce(harness[version], redis_url, backend, queue,
                            "basic,types,chain,group,eta,fail,retry")
            lines += produce(harness[version], redis_url, backend, queue, "chord", "--n", "20")
            settle(moto_server, redis_url, queue)
        reports[who] = verdicts(lines)
        counts[who] = _chord_counters(redis_url)
    go, ours = reports["go"], reports["python"]
    assert len(go) == len(ours) > 150
    same = {name: verdict for name, verdict in go.items() if name not in TIMING}
    assert {name: ours[name] for name in same} == same
    # what Go's AsyncResult itself can read: strings, failure texts, chained string results
    for name in ("basic/concat", "types/string/0", "fail/error_text", "fail/on_error_callback",
                 "retry/counter"):
        assert ours[name] == go[name] == "ok", name
    assert go["basic/add"] == ours["basic/add"] == "6 is not int64"
    # the chord: Go's callback fails to reflect "2" as int64 and never counts; ours runs once
    # (after Go's ChordAsyncResult gave up on the members' results: counted once all settled)
    assert (counts["go"], counts["python"]) == ([], [1])


def _chord_counters(redis_url: str) -> list[int]:
    """The counts of the chord callbacks' keys, which are then deleted."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter("interop:chord:*"))
    counts = [int(v or 0) for v in client.mget(keys)] if keys else []
    if keys:
        client.delete(*keys)
    client.close()
    return counts


def _typed_edge_values() -> list[tuple[str, Any]]:
    pairs = [(go_type, value) for go_type, values in EDGE.items() for value in values]
    pairs += [(f"[]{go_type}", values) for go_type, values in EDGE.items() if go_type != "string"]
    return [*pairs, ("[]byte", b"\x00\xff<>&"), ("[]int64", []), ("[]string", ["a b", "c"])]


@pytest.mark.parametrize("version", VERSIONS)
def test_our_producer_and_async_result_with_a_go_worker(version: str, harness: dict[str, Path],
                                                        moto_server: MotoServer,
                                                        redis_url: str) -> None:
    fresh_tables(moto_server)
    queue = fresh_queue()
    app = python_app(moto_server, redis_url, queue)  # types the args; no worker of ours runs
    counters = redis.Redis.from_url(redis_url)
    with go_worker(harness[version], redis_url, queue, 8, backend=backend_url(moto_server)):
        sent = [(go_type, value, app.send_task(echo_task_name(go_type), value))
                for go_type, value in _typed_edge_values()]
        for go_type, value, result in sent:
            if go_type == "[]string":  # stored as "[a b c]": one reading no more
                with pytest.raises(ArgTranslationError, match=r"'\[a b c\]' is not \[\]string"):
                    result.get(timeout=60)
                continue
            expected = to_python(go_type, to_wire(go_type, value))
            assert result.get(timeout=60) == expected, (go_type, value)
        chain = app.send_chain(app.signature("add", 1, 2), app.signature("multiply", 10),
                               app.signature("add", 5))
        assert chain.get(timeout=60) == 35
        group = app.send_group(*(app.signature("add", i, i) for i in range(5)))
        assert group.get(timeout=60) == [0, 2, 4, 6, 8]
        sent_at = time.time_ns() // 1_000_000
        assert app.send_task("stamp", f"s_{uuid.uuid4().hex}", countdown=2).get(timeout=60) \
            >= sent_at + 1950
        with pytest.raises(TaskFailed, match=r"^boom <&> é$"):
            app.send_task("fail", "boom <&> é").get(timeout=60)
        key = f"r_{uuid.uuid4().hex}"
        assert app.send_task("retry_later", key).get(timeout=60) == 3
        assert int(counters.get(key) or 0) == 3
    # Go's callback gets its members' results as text and fails (its consumer then stops a
    # while). One goroutine: several would each fire the chord (Go's trigger is not atomic)
    # and the last one's PENDING could outlive the failures.
    with go_worker(harness[version], redis_url, queue, 1, backend=backend_url(moto_server)):
        chord = app.send_chord([app.signature("add", i, 1) for i in range(5)],
                               app.signature("count_call", f"c_{uuid.uuid4().hex}"))
        with pytest.raises(TaskFailed, match=r"^Reflect task args error: \d+ is not int64$"):
            chord.get(timeout=60)
    counters.close()
    app.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_a_go_worker_and_ours_share_a_chord_of_50(version: str, harness: dict[str, Path],
                                                  moto_server: MotoServer,
                                                  redis_url: str) -> None:
    """The last members finish on both sides at once, each side's TriggerChord races the
    other's: the callback runs once, every round. (One Go worker of concurrency 1: two Go
    goroutines race each other with Go's non-atomic trigger, which nothing of ours can stop.)
    The callback is Immutable, so it runs whoever sent it (module doc)."""
    fresh_tables(moto_server)
    queue = fresh_queue()
    app = python_app(moto_server, redis_url, queue)
    counters = redis.Redis.from_url(redis_url)
    with go_worker(harness[version], redis_url, queue, 1, backend=backend_url(moto_server)), \
            worker_thread(python_app(moto_server, redis_url, queue), 4):
        for round_ in range(6):
            key = f"chord_{uuid.uuid4().hex}"
            chord = app.send_chord([app.signature("add", i, 1) for i in range(50)],
                                   app.signature("count_call", key, immutable=True))
            assert chord.get(timeout=120) == 0, round_
            time.sleep(0.5)  # a second callback would be on its way
            assert int(counters.get(key) or 0) == 1, round_
    counters.close()
    app.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_go_producers_chord_of_50_on_a_go_worker_and_ours(version: str,
                                                          harness: dict[str, Path],
                                                          moto_server: MotoServer,
                                                          redis_url: str,
                                                          tmp_path: Path) -> None:
    """Go's producer sends its chord of 50 (callback ``count_call`` with the members' int64
    results appended) to a Go worker and ours on one queue, three times: the chord is
    triggered and its callback never runs twice. Who triggers decides whether it can run
    at all: a callback sent by Go carries Go's text and fails to reflect anywhere (as with
    Go workers alone), one sent by us carries typed values and runs once.

    When Go's worker runs such a callback, machinery v1's consumer stops on the error and
    abandons its receiving goroutine (``v1/brokers/redis``), which still holds what it popped
    ahead: one message in its ``deliveries`` channel (capacity = concurrency, here 1) and
    one blocked on sending to it. So up to two members per consumer error never run and
    their chord never completes: every member that never ran is one of those, and every
    completed chord fired."""
    fresh_tables(moto_server)
    queue = fresh_queue()
    backend = backend_url(moto_server)
    go_log = tmp_path / "go-worker.log"
    with go_worker(harness[version], redis_url, queue, 1, backend=backend, log_path=go_log), \
            worker_thread(python_app(moto_server, redis_url, queue), 4):
        for _ in range(3):
            produce(harness[version], redis_url, backend, queue, "chord", "--n", "50")
        settle(moto_server, redis_url, queue)
    counts = _chord_counters(redis_url)
    assert all(count <= 1 for count in counts), counts
    metas = [group_meta_from_item(item) for item in scan(moto_server, "group_metas")]
    states = {s.task_uuid: s.state for s in map(task_state_from_item,
                                                 scan(moto_server, "task_states"))}
    never_ran = {m.group_uuid: sum(states.get(uuid) not in ("SUCCESS", "FAILURE")
                                   for uuid in m.task_uuids or []) for m in metas}
    assert len(metas) == 3
    assert [(m.chord_triggered, bool(m.lock)) for m in metas] == [
        (never_ran[m.group_uuid] == 0, False) for m in metas], (metas, never_ran)
    go_consumer_errors = go_log.read_text().count("Broker failed with error")
    assert sum(never_ran.values()) <= (2 * go_consumer_errors if version == "v1" else 0), (
        never_ran, go_consumer_errors)


def test_go_fmt_prints_floats_as_we_write_them(tmp_path: Path) -> None:
    """``fmt.Sprintf("%v")`` of 20,000 random float32/float64 bit patterns, by Go itself."""
    (tmp_path / "go.mod").write_text("module fmtv\n\ngo 1.22\n")
    (tmp_path / "main.go").write_text(_FMT_V)
    subprocess.run(["go", "build", "-o", "fmtv", "."], cwd=tmp_path, check=True, timeout=300)
    rng = random.Random(20261202)
    cases: list[tuple[str, float]] = []
    for _ in range(10_000):
        cases.append(("float64", struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]))
        cases.append(("float32", struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]))
        cases.append(("float64", rng.choice([rng.uniform(-1e7, 1e7),
                                             rng.random() * 10 ** rng.randint(-9, 9)])))
    lines = [f"{32 if t == 'float32' else 64} {struct.unpack('<Q', struct.pack('<d', v))[0]:x}"
             for t, v in cases]
    out = subprocess.run([str(tmp_path / "fmtv")], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, check=True, timeout=60).stdout
    wrong = [(t, v, ours, go) for (t, v), go in zip(cases, out.splitlines(), strict=True)
             if (ours := go_text(t, v)) != go]
    assert wrong == []
    for go_type, value in cases:
        if value == value and abs(value) != float("inf"):
            back = read_text(go_type, go_text(go_type, value))
            assert struct.pack("<d", back) == struct.pack("<d", value)


_FMT_V = """package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Each input line "32 BITS" or "64 BITS" (BITS: the float64's bits in hex): its %v.
func main() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		fields := strings.Fields(in.Text())
		bits, _ := strconv.ParseUint(fields[1], 16, 64)
		value := math.Float64frombits(bits)
		if fields[0] == "32" {
			fmt.Fprintf(out, "%v\\n", float32(value))
		} else {
			fmt.Fprintf(out, "%v\\n", value)
		}
	}
}
"""
