"""Task schemas: the Go types of each task's args, so Celery calls can reach Go workers.

A Celery call is ``args`` + ``kwargs`` of plain Python values; a Go worker
needs typed positional Args. A schema file says which types::

    tasks:
      tasks.add:
        args: [int64, int64]
        kwargs: {scale: float64}     # positional Go args after ``args``, in this order
        results: [int64]

(YAML, or the same in TOML). ``TaskSchema.from_tasks`` reads the annotations of
registered Python tasks instead. ``type_args`` converts with range checks and,
with ``strict=True``, refuses anything a Go worker could not take.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from bridge.errors import ArgTranslationError, BridgeError
from bridge.protocol.machinery import Arg
from bridge.types import SUPPORTED_TYPES, to_arg

if TYPE_CHECKING:
    from bridge.task import RegisteredTask


class SchemaError(BridgeError, ValueError):
    """A schema file that cannot be used (bad shape, unknown Go type)."""


class TaskArgError(ArgTranslationError):
    """A task's call does not fit its schema (or cannot be typed at all)."""

    def __init__(self, task: str, reason: str, *, go_type: str | None = None,
                 value: Any = None, position: int | None = None, name: str = "") -> None:
        self.task = task
        super().__init__(reason, go_type=go_type, value=value, position=position, name=name)

    def _render(self) -> str:
        if self.position is None and not self.name:
            return f"task {self.task}: {self.reason}"
        return f"task {self.task}: {super()._render()}"


class ArgTyper(Protocol):
    """What ``to_signature`` needs to type a task's args: a schema, or inference."""

    def type_args(self, task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                  strict: bool = False) -> list[Arg]: ...


@dataclass(frozen=True, slots=True)
class TaskTypes:
    """Go types of one task: positional args, then kwargs (in order), and results."""

    args: tuple[str | None, ...] = ()
    kwargs: tuple[tuple[str, str], ...] = ()
    results: tuple[str | None, ...] | None = None
    variadic: str | None = None
    """Go type of positional args beyond ``args`` (a ``*args`` parameter); None: refused."""
    has_varargs: bool = False


def _typed(task: str, value: Any, go_type: str | None, position: int, name: str,
           strict: bool) -> Arg:
    try:
        return to_arg(value, go_type, name, position=position)
    except ArgTranslationError as exc:
        if go_type is None and not strict:
            return Arg(name=name, type="", value=value)  # untyped: Python consumers only
        raise TaskArgError(task, exc.reason, go_type=exc.go_type, value=value,
                           position=position, name=name) from None


@dataclass(slots=True)
class TaskSchema:
    """Go types per task name; implements :class:`ArgTyper`."""

    tasks: dict[str, TaskTypes] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> TaskSchema:
        """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) schema file."""
        path = Path(path)
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            else:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise SchemaError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
                              ) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "schema") -> TaskSchema:
        """A schema from already-parsed data (``{"tasks": {name: {...}}}``)."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
            raise SchemaError(f"{source}: expected a mapping with a 'tasks' mapping")
        if set(data) - {"tasks"}:
            raise SchemaError(f"{source}: unknown top-level keys {sorted(set(data) - {'tasks'})}")
        return cls({str(name): _task_types(source, str(name), spec)
                    for name, spec in data["tasks"].items()})

    @classmethod
    def from_tasks(cls, tasks: Mapping[str, RegisteredTask]) -> TaskSchema:
        """A schema from registered Python tasks' annotations (unannotated = inferred)."""
        return cls({
            name: TaskTypes(args=tuple(task.param_types), results=tuple(task.result_types),
                            variadic=task.variadic_type, has_varargs=task.has_varargs)
            for name, task in tasks.items()
        })

    def result_types(self, task_name: str) -> tuple[str | None, ...] | None:
        spec = self.tasks.get(task_name)
        return None if spec is None else spec.results

    def type_args(self, task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                  strict: bool = False) -> list[Arg]:
        """Typed Args for a call: positional args, then the kwargs in the schema's order.

        Raises TaskArgError naming the task and the argument when a value does not fit
        its type; with ``strict`` also for untyped values, a task not in the schema, and
        missing or extra args.
        """
        spec = self.tasks.get(task_name)
        if spec is None:
            if strict:
                raise TaskArgError(task_name, "the task is not in the schema")
            return infer_args(task_name, args, kwargs, strict=False)
        out = []
        for position, value in enumerate(args):
            if position < len(spec.args):
                go_type = spec.args[position]
            elif spec.has_varargs or not strict:
                go_type = spec.variadic
            else:
                raise TaskArgError(task_name, f"takes {len(spec.args)} positional args, "
                                   f"the call gives {len(args)}", position=position, value=value)
            out.append(_typed(task_name, value, go_type, position, "", strict))
        if strict and len(args) < len(spec.args):
            raise TaskArgError(task_name, f"missing positional arg {len(args)} "
                               f"({spec.args[len(args)]})", position=len(args))
        known = dict(spec.kwargs)
        for name, go_type in spec.kwargs:
            if name in kwargs:
                out.append(_typed(task_name, kwargs[name], go_type, len(out), name, strict))
            elif strict:
                raise TaskArgError(task_name, f"missing keyword arg {name!r} ({go_type})",
                                   name=name)
        for name, value in kwargs.items():
            if name not in known:
                if strict:
                    raise TaskArgError(task_name, f"unexpected keyword arg {name!r}", name=name,
                                       value=value)
                out.append(_typed(task_name, value, None, len(out), name, False))
        return out


def infer_args(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
               strict: bool = False) -> list[Arg]:
    """Args typed by inference; untyped (Type "") where no Go type fits, unless strict."""
    out = [_typed(task_name, value, None, position, "", strict)
           for position, value in enumerate(args)]
    out += [_typed(task_name, value, None, len(args) + index, name, strict)
            for index, (name, value) in enumerate(kwargs.items())]
    return out


class InferTypes:
    """The :class:`ArgTyper` used without a schema: bridge.types inference."""

    def type_args(self, task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                  strict: bool = False) -> list[Arg]:
        return infer_args(task_name, args, kwargs, strict=strict)


class SchemaOrInference:
    """Args typed by the schema for the tasks it names, by inference for the others;
    ``always_strict``: a value a Go worker cannot take is an error, never an untyped Arg."""

    def __init__(self, schema: TaskSchema | None, *, always_strict: bool = False) -> None:
        self.schema = schema
        self.always_strict = always_strict

    def type_args(self, task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                  strict: bool = False) -> list[Arg]:
        strict = strict or self.always_strict
        if self.schema is not None and task_name in self.schema.tasks:
            return self.schema.type_args(task_name, args, kwargs, strict=strict)
        return infer_args(task_name, args, kwargs, strict=strict)


def _go_type(source: str, task: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or value not in SUPPORTED_TYPES:
        raise SchemaError(f"{source}: task {task}: {where}: {value!r} is not a machinery Go "
                          f"type (one of {', '.join(sorted(SUPPORTED_TYPES))})")
    return value


def _type_list(source: str, task: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise SchemaError(f"{source}: task {task}: {key} must be a list of Go types")
    return tuple(_go_type(source, task, f"{key}[{i}]", v) for i, v in enumerate(value))


def _task_types(source: str, task: str, spec: Any) -> TaskTypes:
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise SchemaError(f"{source}: task {task}: expected a mapping with args/kwargs/results")
    unknown = set(spec) - {"args", "kwargs", "results", "variadic"}
    if unknown:
        raise SchemaError(f"{source}: task {task}: unknown keys {sorted(unknown)}")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise SchemaError(f"{source}: task {task}: kwargs must map names to Go types")
    variadic = spec.get("variadic")
    return TaskTypes(
        args=_type_list(source, task, "args", spec.get("args") or []),
        kwargs=tuple((str(k), _go_type(source, task, f"kwargs.{k}", v))
                     for k, v in kwargs.items()),
        results=(_type_list(source, task, "results", spec["results"])
                 if spec.get("results") is not None else None),
        variadic=None if variadic is None else _go_type(source, task, "variadic", variadic),
        has_varargs=variadic is not None,
    )


__all__ = ["ArgTyper", "InferTypes", "SchemaError", "TaskArgError", "TaskSchema", "TaskTypes",
           "infer_args"]
