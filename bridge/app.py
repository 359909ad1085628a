"""The Bridge app: config, task registry, broker and backend, and the send API.

Passed explicitly to the worker and tools (no module-level default app).
Sending follows machinery's Server: SendTask writes PENDING then publishes;
SendGroup/SendChord InitGroup, write PENDING for every member, then publish.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from bridge.backends.base import Backend, new_state
from bridge.brokers.base import Broker
from bridge.config import Config, ConfigError
from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import PENDING, Signature, TaskState, new_uuid
from bridge.result import AsyncResult, ChainResult, ChordResult, GroupResult
from bridge.task import RegisteredTask
from bridge.types import to_args
from bridge.workflow import new_chain, new_chord, new_group

F = TypeVar("F", bound=Callable[..., Any])


def broker_from_config(config: Config) -> Broker:
    """The broker for ``config.broker``'s URL scheme."""
    url = config.broker
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        from bridge.brokers.redis import RedisBroker

        return RedisBroker.from_config(config)
    if url.startswith(("amqp://", "amqps://")):
        from bridge.brokers.amqp import AmqpBroker

        return AmqpBroker.from_config(config)
    raise ConfigError(f"broker: unsupported URL scheme {url.split('://')[0]}:// "
                      "(this version speaks redis://, rediss://, redis+socket://, amqp://, "
                      "amqps://)", key="broker")


def backend_from_config(config: Config) -> Backend:
    """The result backend for ``config.result_backend``'s URL scheme."""
    url = config.result_backend
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        from bridge.backends.redis import RedisBackend

        return RedisBackend.from_config(config)
    raise ConfigError(f"result_backend: unsupported URL scheme {url.split('://')[0]}:// "
                      "(this version speaks redis://, rediss://, redis+socket://)",
                      key="result_backend")


class Bridge:
    """A machinery-compatible app: register tasks, send tasks, wait for results."""

    def __init__(self, config: Config | None = None, *, broker: Broker | None = None,
                 backend: Backend | None = None) -> None:
        self.config = config or Config()
        self._broker = broker
        self._backend = backend
        self.tasks: dict[str, RegisteredTask] = {}

    @classmethod
    def from_config(cls, path: str | None = None, **overrides: Any) -> Bridge:
        """From machinery's config.yml (or its environment variables when no path)."""
        config = Config.load(path)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        return cls(config)

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = broker_from_config(self.config)
        return self._broker

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = backend_from_config(self.config)
        return self._backend

    # ------------------------------------------------------------------ registry

    def task(self, name: str | None = None) -> Callable[[F], F]:
        """Register a function under a machinery task name (default: its ``__name__``)."""

        def register(func: F) -> F:
            self.register(name or func.__name__, func)
            return func

        return register

    def register(self, name: str, func: Callable[..., Any]) -> RegisteredTask:
        """Register ``func`` (a plain function, coroutine function or Celery task)."""
        run = getattr(func, "run", None)
        is_celery = callable(run) and hasattr(func, "apply_async")
        task = RegisteredTask.wrap(name, run if is_celery and run is not None else func,
                                   lenient=is_celery)
        if is_celery:
            task.celery_task = func
        self.tasks[name] = task
        return task

    # ------------------------------------------------------------------ building

    def signature(self, name: str, *args: Any, arg_types: Sequence[str | None] | None = None,
                  eta: datetime | None = None, countdown: float | None = None,
                  retry_count: int = 0, retry_timeout: int = 0, priority: int = 0,
                  queue: str = "", headers: dict[str, Any] | None = None,
                  immutable: bool = False) -> Signature:
        """A Signature with typed args (from ``arg_types``, a registered task, or inferred)."""
        if arg_types is None and name in self.tasks:
            task = self.tasks[name]
            arg_types = [task.param_types[i] if i < len(task.param_types) else task.variadic_type
                         for i in range(len(args))]
        if countdown is not None:
            eta = GoTime.from_unix_nano(time.time_ns() + int(countdown * 1e9))
        elif eta is not None and eta.tzinfo is None:
            raise ValueError("eta must be timezone-aware (Go times carry an offset)")
        return Signature(
            name=name, routing_key=queue, eta=eta, args=to_args(args, arg_types),
            headers=headers, priority=priority, immutable=immutable,
            retry_count=retry_count, retry_timeout=retry_timeout,
        )

    # ------------------------------------------------------------------ sending

    def _prepare(self, sig: Signature) -> Signature:
        if not sig.uuid:
            sig.uuid = new_uuid("task_")
        if sig.headers is None:
            sig.headers = {}
        if not sig.routing_key:
            sig.routing_key = self.config.default_queue
        return sig

    def send(self, sig: Signature) -> AsyncResult:
        """machinery's SendTask: PENDING state, then publish."""
        self._prepare(sig)
        self.backend.set_state_pending(sig)
        self.broker.publish([sig])
        return AsyncResult(sig.uuid, self.backend)

    def send_task(self, name: str, *args: Any, **options: Any) -> AsyncResult:
        """Build and send one task; see ``signature`` for the options."""
        return self.send(self.signature(name, *args, **options))

    def send_batch(self, signatures: Sequence[Signature]) -> list[AsyncResult]:
        """Send many tasks with one pipelined state write and one pipelined publish."""
        for sig in signatures:
            self._prepare(sig)
        self.backend.set_states([_pending(sig) for sig in signatures])
        self.broker.publish(signatures)
        return [AsyncResult(sig.uuid, self.backend) for sig in signatures]

    def send_chain(self, *signatures: Signature) -> ChainResult:
        """machinery's SendChain: link the tasks, send the first."""
        chain = new_chain(*signatures)
        for sig in chain.tasks:
            if sig.headers is None:
                sig.headers = {}
        self.send(chain.tasks[0])
        return ChainResult([AsyncResult(s.uuid, self.backend) for s in chain.tasks])

    def send_group(self, *signatures: Signature) -> GroupResult:
        """machinery's SendGroup: InitGroup, PENDING for every member, publish them all."""
        group = new_group(*signatures)
        self._send_members(group.group_uuid, group.tasks)
        return GroupResult(group.group_uuid,
                           [AsyncResult(s.uuid, self.backend) for s in group.tasks])

    def send_chord(self, members: Sequence[Signature], callback: Signature) -> ChordResult:
        """machinery's SendChord: a group whose members carry the callback."""
        chord = new_chord(new_group(*members), callback)
        if chord.callback.headers is None:
            chord.callback.headers = {}
        self._send_members(chord.group.group_uuid, chord.group.tasks)
        group = GroupResult(chord.group.group_uuid,
                            [AsyncResult(s.uuid, self.backend) for s in chord.group.tasks])
        return ChordResult(group, AsyncResult(chord.callback.uuid, self.backend))

    def _send_members(self, group_uuid: str, tasks: list[Signature]) -> None:
        for sig in tasks:
            self._prepare(sig)
        self.backend.init_group(group_uuid, [s.uuid for s in tasks])
        self.backend.set_states([_pending(sig) for sig in tasks])
        self.broker.publish(tasks)

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
        if self._backend is not None:
            self._backend.close()


def _pending(sig: Signature) -> TaskState:
    return new_state(sig, PENDING)
