"""Task schemas type Celery calls for Go consumers, or refuse them before publishing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ArgTranslationError
from bridge.protocol.celery import new_task
from bridge.protocol.celery_canvas import from_signature, to_signature
from bridge.schema import SchemaError, TaskArgError, TaskSchema
from bridge.task import RegisteredTask
from bridge.types import Int8

YAML = """\
tasks:
  tasks.add:
    args: [int64, int32]
    kwargs: {scale: float64, label: string}
    results: [int64]
  tasks.blob:
    args: ["[]byte", "[]string"]
"""
TOML = """\
[tasks."tasks.add"]
args = ["int64", "int32"]
kwargs = {scale = "float64", label = "string"}
results = ["int64"]

[tasks."tasks.blob"]
args = ["[]byte", "[]string"]
"""


@pytest.fixture(params=["schema.yaml", "schema.toml"])
def schema(request: pytest.FixtureRequest, tmp_path: Path) -> TaskSchema:
    path = tmp_path / request.param
    path.write_text(YAML if path.suffix == ".yaml" else TOML)
    return TaskSchema.load(path)


def test_load_yaml_and_toml_alike(schema: TaskSchema) -> None:
    spec = schema.tasks["tasks.add"]
    assert spec.args == ("int64", "int32")
    assert spec.kwargs == (("scale", "float64"), ("label", "string"))
    assert schema.result_types("tasks.add") == ("int64",)
    assert schema.result_types("tasks.blob") is None


def test_kwargs_follow_args_in_file_order(schema: TaskSchema) -> None:
    args = schema.type_args("tasks.add", [1, 2], {"label": "x", "scale": 2}, strict=True)
    assert [(a.name, a.type, a.value) for a in args] == [
        ("", "int64", 1), ("", "int32", 2), ("scale", "float64", 2.0), ("label", "string", "x")]
    blob = schema.type_args("tasks.blob", [b"\x00", ["a"]], {}, strict=True)
    assert [(a.type, a.value) for a in blob] == [("[]byte", "AA=="), ("[]string", ["a"])]


def test_schema_types_reach_the_signature_and_back_exactly(schema: TaskSchema) -> None:
    task = new_task("tasks.add", (1, 2), {"label": "x", "scale": 2})
    sig = to_signature(task, types=schema, strict=True)
    assert [a.type for a in sig.args or []] == ["int64", "int32", "float64", "string"]
    assert from_signature(sig) == task  # 2 stays an int for Celery though Go sees 2.0


@pytest.mark.parametrize("args,kwargs,error", [
    ([1, 2**31], {"scale": 1.0, "label": "x"}, r"task tasks.add: arg 1 \(int32\): 2147483648 "
     "is out of range"),
    ([1, "2"], {"scale": 1.0, "label": "x"}, r"arg 1 \(int32\): '2' is not int32"),
    ([1, 2, 3], {"scale": 1.0, "label": "x"}, "takes 2 positional args"),
    ([1], {"scale": 1.0, "label": "x"}, "missing positional arg 1"),
    ([1, 2], {"scale": 1.0}, "missing keyword arg 'label'"),
    ([1, 2], {"scale": 1.0, "label": "x", "other": 1}, "unexpected keyword arg 'other'"),
    ([1, 2], {"scale": "no", "label": "x"}, r"'scale', float64\): 'no' is not float64"),
])
def test_strict_mismatches_fail_before_publishing(schema: TaskSchema, args: list[object],
                                                  kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(TaskArgError, match=error):
        to_signature(new_task("tasks.add", args, kwargs), types=schema, strict=True)


def test_strict_refuses_unknown_tasks_and_untyped_values(schema: TaskSchema) -> None:
    with pytest.raises(TaskArgError, match=r"task tasks\.nope: the task is not in the schema"):
        schema.type_args("tasks.nope", [1], {}, strict=True)
    with pytest.raises(ArgTranslationError, match="dict values have no machinery Go type"):
        to_signature(new_task("tasks.x", [{"a": 1}]), strict=True)
    loose = schema.type_args("tasks.nope", [1, None], {"k": [1, "a"]})
    assert [(a.name, a.type) for a in loose] == [("", "int64"), ("", ""), ("k", "")]


def test_range_errors_even_when_not_strict(schema: TaskSchema) -> None:
    with pytest.raises(TaskArgError, match="out of range for int32"):
        schema.type_args("tasks.add", [1, 2**40], {})


@pytest.mark.parametrize("text,error", [
    ("tasks:\n  t:\n    args: [int128]\n", r"t: args\[0\]: 'int128' is not a machinery Go type"),
    ("tasks:\n  t:\n    kwargs: {a: map}\n", "kwargs.a: 'map' is not"),
    ("tasks:\n  t:\n    results: [complex64]\n", r"results\[0\]: 'complex64'"),
    ("tasks:\n  t:\n    argz: []\n", "unknown keys \\['argz'\\]"),
    ("tasks: [1]\n", "expected a mapping with a 'tasks' mapping"),
    ("tasks: {t: {args: [int8}\n", "not valid yaml"),
])
def test_bad_schema_files_fail_at_load(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=error):
        TaskSchema.load(path)


def test_from_registered_python_tasks() -> None:
    def scale(x: Int8, factor: float, *rest: int) -> int:
        return x

    def loose(a, b):  # type: ignore[no-untyped-def]
        return a

    schema = TaskSchema.from_tasks({"t.scale": RegisteredTask.wrap("t.scale", scale),
                                    "t.loose": RegisteredTask.wrap("t.loose", loose)})
    assert schema.tasks["t.scale"].args == ("int8", "float64")
    typed = schema.type_args("t.scale", [1, 2.5, 7, 8], {}, strict=True)
    assert [a.type for a in typed] == ["int8", "float64", "int64", "int64"]
    with pytest.raises(TaskArgError, match="out of range for int8"):
        schema.type_args("t.scale", [300, 1.0], {}, strict=True)
    assert [a.type for a in schema.type_args("t.loose", ["s", True], {})] == ["string", "bool"]
    with pytest.raises(TaskArgError, match="takes 2 positional args"):
        schema.type_args("t.loose", [1, 2, 3], {}, strict=True)
