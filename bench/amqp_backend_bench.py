"""AMQP result backend: the cost of one state write, ours vs Go machinery v1's and v2's own
backend, on one RabbitMQ, same run.

Each contender writes the states of N tasks in machinery's order, one task after the other:
PENDING, STARTED, SUCCESS with one int64 result; each write is timed on its own and waits for
RabbitMQ's publisher confirm (as Go's updateState does). Go's side is a small program built
against the machinery modules the harness pins, calling ``SetStatePending``,
``SetStateStarted`` and ``SetStateSuccess`` of ``backends/amqp`` (a connection per write,
as machinery does). Rounds alternate the contenders. Two more rows:

* ``bridge, batched``: our worker's way, ``set_states`` of 100 states per call (one round
  trip for the batch), per state;
* RabbitMQ's share: on one kept connection, only what the server must do: PENDING creates
  and binds the task's queue and publishes, STARTED and SUCCESS publish (confirmed).

Run (after `bash .ci/setup`): ``python -m bench.amqp_backend_bench --writes 1000``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import amqp

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
from bridge.backends.amqp import AmqpBackend
from bridge.backends.base import new_state
from bridge.brokers.amqp_session import AmqpSession, Outgoing
from bridge.config import Config
from bridge.protocol.machinery import PENDING, STARTED, SUCCESS, Signature
from bridge.types import to_result

KINDS = dict(zip(OPS, (PENDING, STARTED, SUCCESS), strict=True))


def rabbitmq_floor(url: str, n: int) -> Times:
    """Seconds each write took when RabbitMQ does only what it must: PENDING creates and
    binds the task's queue, then a confirmed publish; STARTED and SUCCESS are a confirmed
    publish alone (one kept connection, declarations not waited for)."""
    session = AmqpSession([url], on_consume_lost=lambda: None)
    channel = session.publish
    arguments = {"x-message-ttl": 60_000, "x-expires": 60_000}
    sig = Signature(uuid="task_floor", name="noop")
    messages = {op: amqp.Message(new_state(sig, kind, [to_result(3, "int64")]
                                           if kind == SUCCESS else None).to_json(),
                                 content_type="application/json", delivery_mode=2)
                for op, kind in KINDS.items()}
    times: Times = {op: [] for op in OPS}
    prefix = f"task_floor_{time.time_ns()}_"
    for i in range(n):
        queue = f"{prefix}{i}"
        for op in OPS:
            t0 = time.perf_counter()
            if op == "pending":
                channel.queue_declare(queue=queue, durable=False, auto_delete=True,
                                      arguments=arguments, nowait=True)
                channel.queue_bind(queue=queue, exchange="machinery_exchange",
                                   routing_key=queue, nowait=True)
            session.publish_confirmed([Outgoing("machinery_exchange", queue, messages[op])])
            times[op].append(time.perf_counter() - t0)
    session.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=1000, help="tasks per contender and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default="", help="a RabbitMQ (default: a private node)")
    args = parser.parse_args()
    from tests.rabbitmq import rabbitmq_url

    n = args.writes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        binary = build_go_program(work, "amqpbench", GO_SOURCE)
        (work / "node").mkdir()
        node = rabbitmq_url(work / "node") if not args.url else nullcontext(args.url)
        with node as url:
            ours = AmqpBackend(url, Config(result_backend=url))
            ours.set_state(new_state(Signature(uuid="task_warm"), PENDING))  # connect
            rows = run_rounds(args.rounds, {
                "RabbitMQ (the least it must do)": lambda: rabbitmq_floor(url, n),
                "bridge (py-amqp, kept connection)": lambda: python_writes(ours, n),
                "bridge, batched (100 per call)": lambda: batched_writes(ours, n),
                "Go machinery v2": lambda: go_writes(binary, "v2", n, ["-url", url]),
                "Go machinery v1": lambda: go_writes(binary, "v1", n, ["-url", url]),
            })
            ours.close()
    print_table(f"AMQP result backend: {n} tasks x {args.rounds} round(s) per contender, one "
           f"RabbitMQ", rows, "RabbitMQ (the least it must do)")


GO_SOURCE = go_state_writer(
    imports="""
	v1amqp "github.com/RichardKnop/machinery/v1/backends/amqp"
	v1config "github.com/RichardKnop/machinery/v1/config"
	v2amqp "github.com/RichardKnop/machinery/v2/backends/amqp"
	v2config "github.com/RichardKnop/machinery/v2/config"
""",
    flags="""
	url := flag.String("url", "", "amqp://user:pass@host:port/vhost")
""",
    construct="""
	if *version == "v1" {
		s = v1{v1amqp.New(&v1config.Config{ResultBackend: *url, ResultsExpireIn: 3600,
			AMQP: &v1config.AMQPConfig{Exchange: "machinery_exchange", ExchangeType: "direct"}})}
	} else {
		s = v2{v2amqp.New(&v2config.Config{ResultBackend: *url, ResultsExpireIn: 3600,
			AMQP: &v2config.AMQPConfig{Exchange: "machinery_exchange", ExchangeType: "direct"}})}
	}
""")

if __name__ == "__main__":
    sys.exit(main())
