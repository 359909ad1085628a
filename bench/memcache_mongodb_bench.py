"""Memcache and MongoDB result backends: the cost of one state write, ours vs Go machinery
v1's and v2's own backends, on one memcached and one MongoDB-wire server, same run.

Each contender writes the states of N tasks in machinery's order, one task after the other:
PENDING, STARTED, SUCCESS with one int64 result; each write is timed on its own
(``bench/state_writes.py``). Go's side calls ``SetStatePending``, ``SetStateStarted`` and
``SetStateSuccess`` of machinery's ``backends/memcache`` and ``backends/mongo``. Rounds
alternate the contenders. Two more rows:

* ``bridge, batched``: our worker's way, ``set_states`` of 100 states per call (one memcache
  round trip per server and wave, one MongoDB bulk write), per state;
* the server's share: memcache, the same ``set`` lines replayed over one socket; MongoDB,
  pymongo's bare ``update_one`` of the same update (a client is needed to speak OP_MSG).

Run (after `bash .ci/setup`): ``python -m bench.memcache_mongodb_bench --writes 2000``
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.state_writes import (
    OPS,
    Times,
    batched_writes,
    build_go_program,
    go_state_writer,
    go_writes,
    print_table,
    python_writes,
    run_rounds,
)
from bridge.backends.base import new_state
from bridge.backends.memcache import MemcacheBackend
from bridge.backends.mongodb import MongoBackend
from bridge.config import Config, MongoDBConfig
from bridge.protocol.machinery import PENDING, STARTED, SUCCESS, Signature, TaskState
from bridge.types import to_result


def memcached_floor(address: tuple[str, int], n: int, expire: int) -> Times:
    """Seconds each replayed ``set`` of Go's bytes took on one socket."""
    sig = Signature(uuid="task_floor", name="noop")
    values = {op: new_state(sig, kind, [to_result(3, "int64")] if kind == SUCCESS else None)
              for op, kind in zip(OPS, (PENDING, STARTED, SUCCESS), strict=True)}
    lines = {op: b"set task_floor 0 %d %d\r\n%s\r\n" % (expire, len(data), data)
             for op, data in ((op, state.to_json()) for op, state in values.items())}
    times: Times = {op: [] for op in OPS}
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            for op in OPS:
                t0 = time.perf_counter()
                sock.sendall(lines[op])
                reply = sock.recv(64)
                times[op].append(time.perf_counter() - t0)
                assert reply == b"STORED\r\n", reply
    return times


def pymongo_floor(backend: MongoBackend, n: int) -> Times:
    """Seconds each bare ``update_one`` (the fields Go sets, built once) took."""
    from bridge.backends.mongodb_documents import state_fields

    sig = Signature(uuid="task_floor", name="noop")
    updates = {op: {"$set": state_fields(new_state(sig, kind, [to_result(3, "int64")]
                                                   if kind == SUCCESS else None),
                                         time.time_ns())}
               for op, kind in zip(OPS, (PENDING, STARTED, SUCCESS), strict=True)}
    tasks = backend._tasks
    times: Times = {op: [] for op in OPS}
    for i in range(n):
        for op in OPS:
            t0 = time.perf_counter()
            tasks.update_one({"_id": f"task_floor_{i}"}, updates[op], upsert=True)
            times[op].append(time.perf_counter() - t0)
    return times


def fresh_database() -> str:
    """A database of its own for each contender and round: FerretDB's writes slow down as a
    collection grows (it scans), so nobody writes into another's documents."""
    return f"bench_{uuid.uuid4().hex[:10]}"


@contextmanager
def fresh_mongo_backend(url: str) -> Iterator[MongoBackend]:
    backend = MongoBackend(url, Config(mongodb=MongoDBConfig(database=fresh_database())))
    backend.set_state(TaskState("task_warm", "noop", PENDING))  # connect, index attempt
    try:
        yield backend
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=2000, help="tasks per contender and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tests.backend_servers import start_ferretdb, start_memcached

    n = args.writes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "memcached").mkdir()
        (work / "ferretdb").mkdir()
        memcached = start_memcached(work / "memcached")
        mongo = start_ferretdb(work / "ferretdb")
        try:
            binary = build_go_program(work, "mmbench", GO_SOURCE)
            cache = MemcacheBackend(memcached.url, Config(), chord_grace=0)
            on_memcache = ["-backend", "memcache", "-target", memcached.url]
            memcache_rows = run_rounds(args.rounds, {
                "memcached (replayed set)": lambda: memcached_floor(memcached.address, n, 0),
                "bridge (pymemcache)": lambda: python_writes(cache, n),
                "bridge, batched (100 per call)": lambda: batched_writes(cache, n),
                "Go machinery v2": lambda: go_writes(binary, "v2", n, on_memcache),
                "Go machinery v1": lambda: go_writes(binary, "v1", n, on_memcache),
            })
            cache.close()

            def ours(measure: Callable[[MongoBackend], Times]) -> Callable[[], Times]:
                def run() -> Times:
                    with fresh_mongo_backend(mongo.url) as backend:
                        return measure(backend)
                return run

            def go(version: str) -> Callable[[], Times]:
                return lambda: go_writes(binary, version, n, [
                    "-backend", "mongodb", "-target", mongo.url, "-database", fresh_database()])

            mongo_rows = run_rounds(args.rounds, {
                "pymongo update_one": ours(lambda backend: pymongo_floor(backend, n)),
                "bridge (pymongo)": ours(lambda backend: python_writes(backend, n)),
                "bridge, batched (100 per call)": ours(lambda backend: batched_writes(backend, n)),
                "Go machinery v2": go("v2"),
                "Go machinery v1": go("v1"),
            })
        finally:
            memcached.stop()
            mongo.stop()
    print_table(f"Memcache: {n} tasks x {args.rounds} round(s) per contender, one memcached",
                memcache_rows, "memcached (replayed set)")
    print_table(f"MongoDB: {n} tasks x {args.rounds} round(s) per contender, FerretDB "
                f"{mongo.ferretdb or '(MongoDB)'} (SQLite), a new database each",
                mongo_rows, "pymongo update_one")


GO_SOURCE = go_state_writer(
    imports="""
	"strings"

	v1mc "github.com/RichardKnop/machinery/v1/backends/memcache"
	v1mongo "github.com/RichardKnop/machinery/v1/backends/mongo"
	v1config "github.com/RichardKnop/machinery/v1/config"
	v2mc "github.com/RichardKnop/machinery/v2/backends/memcache"
	v2mongo "github.com/RichardKnop/machinery/v2/backends/mongo"
	v2config "github.com/RichardKnop/machinery/v2/config"
""",
    flags="""
	backend := flag.String("backend", "memcache", "memcache or mongodb")
	target := flag.String("target", "", "memcache://host:port or mongodb://host:port/")
	database := flag.String("database", "", "MongoDB database")
""",
    construct="""
	servers := strings.Split(strings.TrimPrefix(*target, "memcache://"), ",")
	switch {
	case *version == "v1" && *backend == "memcache":
		s = v1{v1mc.New(&v1config.Config{ResultsExpireIn: 3600}, servers)}
	case *version == "v2" && *backend == "memcache":
		s = v2{v2mc.New(&v2config.Config{ResultsExpireIn: 3600}, servers)}
	case *version == "v1":
		s = v1{must(v1mongo.New(&v1config.Config{ResultBackend: *target, ResultsExpireIn: 3600,
			MongoDB: &v1config.MongoDBConfig{Database: *database}}))}
	default:
		s = v2{must(v2mongo.New(&v2config.Config{ResultBackend: *target, ResultsExpireIn: 3600,
			MongoDB: &v2config.MongoDBConfig{Database: *database}}))}
	}
""")


if __name__ == "__main__":
    main()
