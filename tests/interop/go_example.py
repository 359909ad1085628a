"""machinery's own AMQP example program (``v2/example/amqp`` of the v2.0.16 module), built from
the Go module cache/proxy with nothing but its URLs changed, and the Python side of the
tasks it sends (``v2/example/tasks``) for our worker.

No copy of its source is kept in this repository: the build copies ``main.go`` from the
module (``go mod download``) into a temporary module, replaces the two URL literals
(``amqp://guest:guest@localhost:5672/``) with the test broker's, and lets ``go mod tidy``
resolve its imports (machinery's own packages, urfave/cli...) at machinery's versions.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bridge.app import Bridge
from bridge.config import AMQPConfig, Config
from bridge.demo import demo_app

MODULE = "github.com/RichardKnop/machinery/v2"
VERSION = "v2.0.16"
EXAMPLE_URL = "amqp://guest:guest@localhost:5672/"
"""The broker and result backend the example hard-codes (its only change here)."""


def build_amqp_example(url: str, workdir: Path) -> Path:
    """The example's binary talking to ``url`` (broker and result backend)."""
    download = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
                              capture_output=True, text=True, check=True, timeout=600)
    source = (Path(json.loads(download.stdout)["Dir"]) / "example" / "amqp" /
              "main.go").read_text()
    assert source.count(EXAMPLE_URL) == 2, "the example's URLs moved"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.go").write_text(source.replace(EXAMPLE_URL, url))
    (workdir / "go.mod").write_text(f"module machinery-example-amqp\n\ngo 1.22\n\n"
                                    f"require {MODULE} {VERSION}\n")
    subprocess.run(["go", "mod", "tidy"], cwd=workdir, check=True, timeout=600,
                   capture_output=True)
    binary = workdir / "example-amqp"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=workdir, check=True,
                   timeout=1200, capture_output=True)
    return binary


def example_config(url: str) -> Config:
    """The example's ``config.Config``: broker and results on ``url``, its AMQP settings."""
    return Config(broker=url, result_backend=url, default_queue="machinery_tasks",
                  results_expire_in=3600,
                  amqp=AMQPConfig(exchange="machinery_exchange", exchange_type="direct",
                                  binding_key="machinery_task", prefetch_count=3))


def example_app(url: str, long_running_seconds: float = 10.0) -> Bridge:
    """Our app serving the example's tasks (``exampletasks``), under the same names."""
    app = demo_app(example_config(url))  # add, multiply, concat

    @app.task("sum_ints")
    def sum_ints(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task("sum_floats")
    def sum_floats(numbers: list[float]) -> float:
        return sum(numbers, 0.0)

    @app.task("split")
    def split(text: str) -> list[str]:
        return list(text)

    @app.task("panic_task")
    def panic_task() -> str:
        raise RuntimeError("oops")  # Go: panic(errors.New("oops")) → the error "oops"

    @app.task("long_running_task")
    def long_running_task() -> None:
        time.sleep(long_running_seconds)

    return app
