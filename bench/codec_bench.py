"""Codec speed: µs per message to decode + translate and to encode a typical signature.

Compared in the same run with plain ``json.loads`` / ``json.dumps`` of the same bytes
(which do neither Go's rules nor typing). Run: ``python bench/codec_bench.py``.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import Signature, TaskState
from bridge.types import args_to_python, to_arg, to_result

TYPICAL = Signature(
    uuid="task_0b9e8f2a-1111-2222-3333-444455556666", name="process_order",
    routing_key="machinery_tasks", eta=GoTime.from_unix_nano(1714979289123456789),
    args=[to_arg(1234567, "int64", "order_id"), to_arg("customer-42 <vip>", "string"),
          to_arg(99.95, "float64"), to_arg(["a", "b", "c"], "[]string"),
          to_arg(True, "bool"), to_arg(b"\x00\x01payload", "[]byte")],
    headers={}, retry_count=3,
    on_success=[Signature(uuid="task_2", name="notify", args=[to_arg("done")])],
)
STATE = TaskState("task_x", "process_order", "SUCCESS", [to_result(42), to_result("ok")])


def per_call_us(func: Callable[[], object], repeat: int = 5, number: int = 20000) -> float:
    """Best of ``repeat`` runs, in µs per call."""
    return min(timeit.repeat(func, repeat=repeat, number=number)) / number * 1e6


def main() -> None:
    data = TYPICAL.to_json()
    state = STATE.to_json()
    plain = json.loads(data)

    def decode_translate() -> object:
        return args_to_python(Signature.from_json(data).args)

    rows = [
        ("signature decode + translate args", per_call_us(decode_translate),
         per_call_us(lambda: json.loads(data))),
        ("signature encode (Go bytes)", per_call_us(TYPICAL.to_json),
         per_call_us(lambda: json.dumps(plain, separators=(",", ":")))),
        ("task state decode", per_call_us(lambda: TaskState.from_json(state)),
         per_call_us(lambda: json.loads(state))),
        ("task state encode", per_call_us(STATE.to_json),
         per_call_us(lambda: json.dumps(json.loads(state), separators=(",", ":")))),
    ]
    print(f"typical signature: {len(data)} bytes, {len(TYPICAL.args or [])} args")
    print(f"{'operation':36} {'bridge µs':>10} {'json µs':>9} {'ratio':>7}")
    for name, ours, baseline in rows:
        print(f"{name:36} {ours:10.2f} {baseline:9.2f} {ours / baseline:6.1f}x")


if __name__ == "__main__":
    main()
