"""What the result-backend benchmarks share: one state write timed on its own, ours (a
Python loop) and Go machinery's (a small Go program built against the machinery modules the
harness pins, ``compat_fixtures/go.mod``: v1.10.8 and v2.0.16), and the table they print.

Each contender writes the states of N tasks in machinery's order, one task after the other:
PENDING, STARTED, SUCCESS with one int64 result.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge.backends.base import Backend, new_state
from bridge.protocol.machinery import PENDING, STARTED, SUCCESS, Signature
from bridge.types import to_result

ROOT = Path(__file__).resolve().parent.parent
OPS = ("pending", "started", "success")
Times = dict[str, list[float]]
"""Seconds each write took, by state."""


def python_writes(backend: Backend, n: int) -> Times:
    """Our backend writing N tasks' states, each write timed."""
    times: Times = {op: [] for op in OPS}
    results = [to_result(3, "int64")]
    prefix = f"task_py_{uuid.uuid4().hex[:8]}_"
    for i in range(n):
        sig = Signature(uuid=f"{prefix}{i}", name="noop")
        t0 = time.perf_counter()
        backend.set_state_pending(sig)
        t1 = time.perf_counter()
        backend.set_state_started(sig)
        t2 = time.perf_counter()
        backend.set_state_success(sig, results)
        t3 = time.perf_counter()
        times["pending"].append(t1 - t0)
        times["started"].append(t2 - t1)
        times["success"].append(t3 - t2)
    return times


def batched_writes(backend: Backend, n: int, batch: int = 100) -> Times:
    """Our worker's way: ``set_states`` of ``batch`` states of one kind per call; seconds
    per state."""
    times: Times = {op: [] for op in OPS}
    results = [to_result(3, "int64")]
    prefix = f"task_pb_{uuid.uuid4().hex[:8]}_"
    for start in range(0, n, batch):
        sigs = [Signature(uuid=f"{prefix}{i}", name="noop")
                for i in range(start, min(n, start + batch))]
        for op, kind in zip(OPS, (PENDING, STARTED, SUCCESS), strict=True):
            states = [new_state(sig, kind, results if kind == SUCCESS else None) for sig in sigs]
            t0 = time.perf_counter()
            backend.set_states(states)
            times[op] += [(time.perf_counter() - t0) / len(states)] * len(states)
    return times


def go_state_writer(imports: str, flags: str, construct: str) -> str:
    """The Go contender's source: ``construct`` (Go statements, with the ``flags`` declared
    and parsed) sets ``s`` to ``v1{backend}`` or ``v2{backend}`` for ``*version``; the
    program writes one warm-up state, then times each write of ``-n`` tasks and prints
    ``{"pending": [ns...], "started": [...], "success": [...]}``."""
    return (_GO_STATE_WRITER.replace("/*IMPORTS*/", imports).replace("/*FLAGS*/", flags)
            .replace("/*CONSTRUCT*/", construct))


def build_go_program(work: Path, name: str, source: str) -> Path:
    """``source`` (package main) built as ``work/name/name`` (no network with a warm cache)."""
    directory = work / name
    directory.mkdir()
    compat = ROOT / "compat_fixtures"
    gomod = (compat / "go.mod").read_text().replace(
        "module github.com/machinery-bridge/compat", f"module github.com/machinery-bridge/{name}")
    (directory / "go.mod").write_text(gomod)
    shutil.copy(compat / "go.sum", directory / "go.sum")
    (directory / "main.go").write_text(source)
    subprocess.run(["go", "build", "-mod=mod", "-o", name, "."], cwd=directory, check=True,
                   timeout=900)
    return directory / name


def go_writes(binary: Path, version: str, n: int, args: Sequence[str]) -> Times:
    """The Go contender's writes (``args``: its own flags)."""
    out = subprocess.run([str(binary), "-version", version, "-n", str(n), *args],
                         capture_output=True, text=True, check=True, timeout=1800).stdout
    nanos: dict[str, list[int]] = json.loads(out)
    return {op: [ns / 1e9 for ns in nanos[op]] for op in OPS}


def run_rounds(rounds: int, contenders: dict[str, Callable[[], Times]]) -> dict[str, Times]:
    """Every contender once per round, in turn; their samples pooled."""
    samples: dict[str, Times] = {}
    for _ in range(rounds):
        for name, measure in contenders.items():
            for op, values in measure().items():
                samples.setdefault(name, {}).setdefault(op, []).extend(values)
    return samples


def summary(times: list[float]) -> tuple[float, float]:
    """(median, p99) of seconds, in microseconds."""
    ordered = sorted(times)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


def print_table(title: str, samples: dict[str, Times], floor: str) -> None:
    """Median / p99 per write and contender, and ``floor``'s share of each."""
    print(title + "; microseconds per write, median / p99")
    print(f"  {'':34s}" + "".join(f"{op:>18s}" for op in OPS))
    for name, by_op in samples.items():
        cells = "".join(f"{'{:.0f} / {:.0f}'.format(*summary(by_op[op])):>18s}" for op in OPS)
        print(f"  {name:34s}{cells}")
    base = {op: summary(samples[floor][op])[0] for op in OPS}
    for name, by_op in samples.items():
        if name != floor:
            shares = ", ".join(f"{op} {base[op] / summary(by_op[op])[0]:.0%}" for op in OPS)
            print(f"  {floor}'s share of {name}: {shares}")


_GO_STATE_WRITER = """package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	v1tasks "github.com/RichardKnop/machinery/v1/tasks"
	v2tasks "github.com/RichardKnop/machinery/v2/tasks"
/*IMPORTS*/
)

type states interface {
	pending(uuid string) error
	started(uuid string) error
	success(uuid string) error
}

type v1 struct{ b interface {
	SetStatePending(*v1tasks.Signature) error
	SetStateStarted(*v1tasks.Signature) error
	SetStateSuccess(*v1tasks.Signature, []*v1tasks.TaskResult) error
} }

func (s v1) sig(u string) *v1tasks.Signature { return &v1tasks.Signature{UUID: u, Name: "noop"} }
func (s v1) pending(u string) error          { return s.b.SetStatePending(s.sig(u)) }
func (s v1) started(u string) error          { return s.b.SetStateStarted(s.sig(u)) }
func (s v1) success(u string) error {
	return s.b.SetStateSuccess(s.sig(u), []*v1tasks.TaskResult{{Type: "int64", Value: int64(3)}})
}

type v2 struct{ b interface {
	SetStatePending(*v2tasks.Signature) error
	SetStateStarted(*v2tasks.Signature) error
	SetStateSuccess(*v2tasks.Signature, []*v2tasks.TaskResult) error
} }

func (s v2) sig(u string) *v2tasks.Signature { return &v2tasks.Signature{UUID: u, Name: "noop"} }
func (s v2) pending(u string) error          { return s.b.SetStatePending(s.sig(u)) }
func (s v2) started(u string) error          { return s.b.SetStateStarted(s.sig(u)) }
func (s v2) success(u string) error {
	return s.b.SetStateSuccess(s.sig(u), []*v2tasks.TaskResult{{Type: "int64", Value: int64(3)}})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func main() {
	version := flag.String("version", "v2", "v1 or v2")
	n := flag.Int("n", 1000, "tasks")
/*FLAGS*/
	flag.Parse()
	var s states
/*CONSTRUCT*/
	if err := s.pending(fmt.Sprintf("task_warm_%d", time.Now().UnixNano())); err != nil {
		panic(err) // connects (and, for some backends, creates indexes) before the timing
	}
	out := map[string][]int64{}
	prefix := fmt.Sprintf("task_go%s_%d_", *version, time.Now().UnixNano())
	for i := 0; i < *n; i++ {
		u := fmt.Sprintf("%s%d", prefix, i)
		for _, op := range []struct {
			name string
			call func(string) error
		}{{"pending", s.pending}, {"started", s.started}, {"success", s.success}} {
			t0 := time.Now()
			if err := op.call(u); err != nil {
				panic(err)
			}
			out[op.name] = append(out[op.name], int64(time.Since(t0)))
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""
