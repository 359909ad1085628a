"""A Python function registered under a machinery task name.

Args arrive typed by their Go Type strings; a parameter annotated with another
Go type (``Int8`` where the message says ``int64``) gets the value converted,
range-checked. Return values become TaskResults typed by the return annotation
(``-> tuple[int, str]`` is two results; ``-> None`` none), else inferred.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ArgTranslationError, BridgeError
from bridge.protocol.machinery import Arg, TaskResult
from bridge.types import (
    function_go_types,
    go_type_of,
    infer_go_type,
    result_go_types,
    to_python,
    to_result,
    to_wire,
)


class ReflectArgsError(ArgTranslationError):
    """The message's args cannot be given to the function (machinery: Reflect task args error)."""


class TaskDefinitionError(BridgeError, TypeError):
    """A task function whose annotation has no machinery Go type: names the task, the
    parameter (or the return value) and what to write instead."""


_GO_ANNOTATIONS = ("bool, int, float, str, bytes, list[T], or bridge.Int8 ... Int64, "
                   "Uint ... Uint64, Float32")


@dataclass(slots=True)
class RegisteredTask:
    """A task function with the Go types of its parameters and results."""

    name: str
    func: Callable[..., Any]
    param_types: list[str | None] = field(default_factory=list)
    result_types: list[str | None] = field(default_factory=list)
    variadic_type: str | None = None
    """Go type of each ``*args`` value (``*args: Int8`` → int8)."""
    has_varargs: bool = False
    is_async: bool = False
    celery_task: Any = None
    """The Celery Task object when ``func`` is a Celery task's ``run``."""

    @classmethod
    def wrap(cls, name: str, func: Callable[..., Any], *, lenient: bool = False
             ) -> RegisteredTask:
        """Read ``func``'s annotations into Go types (``lenient``: an annotation with no Go
        type, such as a Celery task's ``-> dict``, leaves that position untyped)."""
        try:
            params, results = (_lenient_go_types(func) if lenient
                               else function_go_types(func))
        except TypeError as exc:
            raise _definition_error(name, func, exc) from None
        sig = inspect.signature(func)
        has_varargs = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
        variadic = params.pop() if has_varargs and params else None
        return cls(name=name, func=func, param_types=params, result_types=results,
                   variadic_type=variadic, has_varargs=has_varargs,
                   is_async=inspect.iscoroutinefunction(func))

    def python_args(self, args: Sequence[Arg] | None) -> list[Any]:
        """Typed Python values for the function, in order."""
        values = []
        for position, arg in enumerate(args or ()):
            value = to_python(arg.type, arg.value, position=position, name=arg.name)
            wanted = self._param_type(position)
            if wanted is not None and wanted != arg.type:
                try:  # another width or slice type: convert with range checks
                    value = to_python(wanted, to_wire(wanted, value))
                except ArgTranslationError as exc:
                    raise ReflectArgsError(
                        f"the task takes {wanted}, the message sends {arg.type}: {exc.reason}",
                        go_type=arg.type, value=arg.value, position=position, name=arg.name,
                    ) from None
            values.append(value)
        return values

    def _param_type(self, position: int) -> str | None:
        if position < len(self.param_types):
            return self.param_types[position]
        return self.variadic_type

    def results(self, returned: Any) -> list[TaskResult]:
        """TaskResults for what the function returned, typed like a Go worker types them."""
        declared = self.result_types
        if declared == [] or (returned is None and declared in ([None], [])):
            return []
        if len(declared) > 1:
            if not isinstance(returned, tuple) or len(returned) != len(declared):
                raise TypeError(f"task {self.name} must return a tuple of {len(declared)} values")
            return [to_result(v, t) for v, t in zip(returned, declared, strict=True)]
        go_type = declared[0] if declared else None
        if go_type is None and isinstance(returned, tuple):  # unannotated tuple: several results
            return [to_result(v, infer_go_type(v)) for v in returned]
        return [to_result(returned, go_type)]

    def call(self, values: Sequence[Any], kwargs: dict[str, Any] | None = None) -> Any:
        """Run the function (a coroutine function runs to completion on its own loop)."""
        if self.is_async:
            return _run_coroutine(self.func(*values, **(kwargs or {})))
        return self.func(*values, **(kwargs or {}))



def _definition_error(name: str, func: Callable[..., Any], exc: TypeError
                      ) -> TaskDefinitionError:
    """Which annotation of ``func`` has no Go type, as one line naming the task."""
    where = f"task {name!r} ({_where(func)})"
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as hint_error:  # an annotation that does not even evaluate
        return TaskDefinitionError(f"{where}: its annotations cannot be read ({hint_error})")
    for label, annotation in _annotations(func, hints):
        try:
            result_go_types(annotation) if label == "return" else go_type_of(annotation)
        except TypeError as bad:
            shown = _shown(annotation)
            what = (f"the return type {shown}" if label == "return"
                    else f"parameter {label!r} ({shown})")
            reason = _shown(str(bad))
            piece = reason.removesuffix(" has no machinery Go type")
            detail = ("" if piece == shown else f" ({piece} in it)" if piece != reason
                      else f" ({reason})")
            return TaskDefinitionError(
                f"{where}: {what} has no machinery Go type{detail}; annotate it with "
                f"{_GO_ANNOTATIONS}, or take the value as JSON text (str)")
    return TaskDefinitionError(f"{where}: {exc}")


def _shown(annotation: Any) -> str:
    """An annotation as written (``dict``, ``list[dict[str, int]]``)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"<class '(?:builtins\.)?([\w.]+)'>", r"\1", text).replace("typing.", "")


def _where(func: Callable[..., Any]) -> str:
    """``file.py:line`` of a function (its qualified name when the source is unknown)."""
    code = getattr(func, "__code__", None)
    if code is None:
        return str(getattr(func, "__qualname__", func))
    return f"{code.co_filename}:{code.co_firstlineno}"


def _annotations(func: Callable[..., Any], hints: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, annotation) of each positional parameter, then ("return", annotation)."""
    found = [(p.name, hints[p.name])
             for p in inspect.signature(func).parameters.values()
             if p.name in hints and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                               p.VAR_POSITIONAL)]
    if "return" in hints:
        found.append(("return", hints["return"]))
    return found


def _lenient_go_types(func: Callable[..., Any]) -> tuple[list[str | None], list[str | None]]:
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:
        hints = {}

    def go(annotation: Any) -> str | None:
        try:
            return go_type_of(annotation)
        except TypeError:
            return None

    params = [go(hints.get(p.name, inspect.Parameter.empty))
              for p in inspect.signature(func).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    try:
        results = result_go_types(hints.get("return", inspect.Signature.empty))
    except TypeError:
        results = [None]
    return params, [None if r is None else r for r in results]


_LOOPS = threading.local()


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine on this thread's own event loop (one loop per worker thread)."""
    loop = getattr(_LOOPS, "loop", None)
    if loop is None:
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)
