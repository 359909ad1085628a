"""The files under ``examples/`` (README's Install and schema sections point at them) load
as they say: each sample config.yml without a warning, and the schema types a Celery chain
and a chord for Go workers only with its ``variadic`` keys."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Config
from bridge.protocol.celery import new_task
from bridge.protocol.celery_canvas import to_signature
from bridge.schema import TaskArgError, TaskSchema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("name", "broker", "backend"), [
    ("redis.yml", "redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("amqp.yml", "amqp://guest:guest@localhost:5672/", "redis://localhost:6379/0"),
    ("sqs.yml", "https://sqs.us-east-1.amazonaws.com/123456789012", "redis://localhost:6379/0"),
])
def test_sample_config_loads_without_warnings(name: str, broker: str, backend: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown key would be a ConfigWarning
        config = Config.from_yaml(EXAMPLES / name)
    assert (config.broker, config.result_backend) == (broker, backend)
    assert config.default_queue == "machinery_tasks"


def test_sample_configs_pick_their_broker() -> None:
    redis = Config.from_yaml(EXAMPLES / "redis.yml")
    assert redis.redis is not None and redis.redis.delayed_tasks_key == "delayed_tasks"
    amqp = Config.from_yaml(EXAMPLES / "amqp.yml")
    assert amqp.amqp is not None and amqp.amqp.binding_key == "machinery_task"
    sqs = Config.from_yaml(EXAMPLES / "sqs.yml")
    assert sqs.sqs is not None
    assert (sqs.sqs.wait_time_seconds, sqs.sqs.visibility_timeout) == (20, 30)


def _sig(name: str, *args: Any) -> dict[str, Any]:
    return {"task": name, "args": list(args), "kwargs": {}, "options": {},
            "subtask_type": None, "immutable": False, "chord_size": None}


def test_schema_types_a_chain_and_a_chord_through_variadic() -> None:
    schema = TaskSchema.load(EXAMPLES / "schema.yml")
    chain = new_task("tasks.add", [2, 2], chain=[_sig("tasks.mul", 4)])
    sig = to_signature(chain, types=schema, strict=True)
    assert [(a.type, a.value) for a in sig.args] == [("int64", 2), ("int64", 2)]
    [mul] = sig.on_success or []
    assert (mul.name, [(a.type, a.value) for a in mul.args]) == ("tasks.mul", [("int64", 4)])
    header = new_task("tasks.add", [1, 1], group="g", chord=_sig("tasks.tsum"))
    member = to_signature(header, types=schema, strict=True, group_task_count=10)
    assert member.chord_callback is not None and member.chord_callback.name == "tasks.tsum"
    direct = schema.type_args("tasks.mul", [3, 5], {}, strict=True)  # mul.delay(3, 5) too
    assert [a.type for a in direct] == ["int64", "int64"]


def test_without_variadic_a_chain_member_is_refused() -> None:
    schema = TaskSchema.from_dict({"tasks": {"tasks.add": {"args": ["int64", "int64"]},
                                             "tasks.mul": {"args": ["int64", "int64"]}}})
    chain = new_task("tasks.add", [2, 2], chain=[_sig("tasks.mul", 4)])
    with pytest.raises(TaskArgError, match=r"task tasks\.mul: .*missing positional arg 1"):
        to_signature(chain, types=schema, strict=True)
