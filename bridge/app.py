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
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.backends.base import Backend, new_state, now_utc
from bridge.brokers.base import Broker
from bridge.config import Config, ConfigError, default_config, given_config
from bridge.errors import StatesRefused
from bridge.outage import Endpoint, probe
from bridge.protocol.gotime import GoTime
from bridge.protocol.machinery import PENDING, Signature, new_uuid
from bridge.result import AsyncResult, ChainResult, ChordResult, GroupResult
from bridge.task import RegisteredTask
from bridge.types import to_args
from bridge.workflow import new_chain, new_chord, new_group

if TYPE_CHECKING:
    from bridge.redis_send import OneTripSend

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
    if url.startswith(("sqs://", "https://", "http://")):  # an SQS queue URL prefix
        from bridge.brokers.sqs import SqsBroker

        return SqsBroker.from_config(config)
    raise ConfigError(f"broker: unsupported URL scheme {url.split('://')[0]}:// "
                      "(this version speaks redis://, rediss://, redis+socket://, amqp://, "
                      "amqps://, sqs://, https://sqs.<region>.amazonaws.com/<account>)",
                      key="broker")


def backend_from_config(config: Config) -> Backend:
    """The result backend for ``config.result_backend``'s URL scheme."""
    url = config.result_backend
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        from bridge.backends.redis import RedisBackend

        return RedisBackend.from_config(config)
    if url.startswith(("amqp://", "amqps://")):
        from bridge.backends.amqp import AmqpBackend

        return AmqpBackend.from_config(config)
    if url.startswith("memcache://"):
        try:
            from bridge.backends.memcache import MemcacheBackend
        except ImportError as exc:
            raise _missing_extra(exc, "memcache", {"pymemcache"}) from None
        return MemcacheBackend.from_config(config)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        try:
            from bridge.backends.mongodb import MongoBackend
        except ImportError as exc:
            raise _missing_extra(exc, "mongodb", {"pymongo", "bson"}) from None
        return MongoBackend.from_config(config)
    if url.startswith(("dynamodb:", "https://dynamodb.")):
        try:
            from bridge.backends.dynamodb import DynamoDBBackend
        except ImportError as exc:
            raise _missing_extra(exc, "dynamodb", {"boto3", "botocore"}) from None
        return DynamoDBBackend.from_config(config)
    raise ConfigError(f"result_backend: unsupported URL scheme {url.split('://')[0]}:// "
                      "(this version speaks redis://, rediss://, redis+socket://, amqp://, "
                      "amqps://, memcache://, "
                      "mongodb://, mongodb+srv://, dynamodb://, https://dynamodb.REGION."
                      "amazonaws.com)", key="result_backend")


def _missing_extra(exc: ImportError, extra: str, packages: set[str]) -> Exception:
    """A one-line ConfigError when ``exc`` says an optional client library is absent."""
    package = (exc.name or "").partition(".")[0]
    if package not in packages:
        return exc
    return ConfigError(f"result_backend: the {extra} backend needs {package}, which is not "
                       f"installed: pip install 'machinery-bridge[{extra}]'",
                       key="result_backend")


class Bridge:
    """A machinery-compatible app: register tasks, send tasks, wait for results."""

    def __init__(self, config: Config | None = None, *, broker: Broker | None = None,
                 backend: Backend | None = None) -> None:
        """``config=None``: the configuration is read when first needed, from the command's
        ``--config`` (``mbridge ... --config PATH``), else machinery's environment variables."""
        self._config = config
        self._broker = broker
        self._backend = backend
        self._one_trip: OneTripSend | None = None
        self._one_trip_for: tuple[int, int] | None = None
        self.tasks: dict[str, RegisteredTask] = {}

    @classmethod
    def from_config(cls, path: str | None = None, **overrides: Any) -> Bridge:
        """From machinery's config.yml (or its environment variables when no path). Under
        ``mbridge ... --config PATH`` the command's file is used instead of ``path``."""
        config = given_config()
        if config is None:
            config = default_config() if path is None else Config.load(path)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        return cls(config)

    @property
    def config(self) -> Config:
        """machinery's configuration (resolved on first use when none was given)."""
        if self._config is None:
            self._config = default_config()
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config

    @property
    def configured(self) -> bool:
        """Whether a configuration was given (or already resolved)."""
        return self._config is not None

    def check(self, *, broker: bool = True, backend: bool = True) -> None:
        """Reach the broker and the result backend once (start-up validation): one line
        naming the URL (password redacted) and the fix when one cannot be reached
        (:class:`~bridge.errors.Unreachable`) or refuses the login (``ConfigError``)."""
        config = self.config
        endpoints: list[Endpoint] = []
        if broker:
            endpoints.append(("broker", config.broker, "`broker` in the config (or BROKER)",
                              lambda: self.broker.ping()))
        if backend:
            endpoints.append(("result backend", config.result_backend,
                              "`result_backend` in the config (or RESULT_BACKEND)",
                              lambda: self.backend.ping()))
        probe(endpoints)

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
        if not sig.routing_key and not self.broker.keeps_empty_routing_key:
            sig.routing_key = self.config.default_queue
        return sig

    def send(self, sig: Signature) -> AsyncResult:
        """machinery's SendTask: PENDING state, then publish (one round trip when both live
        in one Redis: ``bridge.redis_send``)."""
        self._prepare(sig)
        backend, broker = self.backend, self.broker
        one_trip = self._one_trip_sender()
        if one_trip is None or not one_trip.send(sig):
            backend.set_state_pending(sig)
            broker.publish([sig])
        return AsyncResult(sig.uuid, backend)

    def _one_trip_sender(self) -> OneTripSend | None:
        """The one-round-trip sender when the broker and the backend share a Redis."""
        backend, broker = self.backend, self.broker
        if self._one_trip_for != (id(backend), id(broker)):
            from bridge.redis_send import OneTripSend  # Redis only when it is used

            self._one_trip_for = (id(backend), id(broker))
            self._one_trip = OneTripSend.between(backend, broker)
        return self._one_trip

    def send_task(self, name: str, *args: Any, **options: Any) -> AsyncResult:
        """Build and send one task; see ``signature`` for the options."""
        return self.send(self.signature(name, *args, **options))

    def send_batch(self, signatures: Sequence[Signature]) -> list[AsyncResult]:
        """Send many tasks: each one's PENDING state, then its message (SendTask for each).

        Where the broker and backend share a Redis, states and messages go by script calls
        streamed in one round trip; otherwise (and for what those leave) one pipelined
        state write, then one pipelined publish. A task whose state is refused (a foreign
        key) is not published; the others are, and then ``StatesRefused`` is raised.
        """
        for sig in signatures:
            self._prepare(sig)
        one_trip = self._one_trip_sender()
        left = list(signatures) if one_trip is None else one_trip.send_many(signatures)
        if left:
            try:
                now = now_utc()
                self.backend.set_states([new_state(sig, PENDING, now=now) for sig in left])
            except StatesRefused as exc:
                self.broker.publish([sig for sig in left if sig.uuid not in exc.refused])
                raise
            self.broker.publish(left)
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
        now = now_utc()
        self.backend.set_states([new_state(sig, PENDING, now=now) for sig in tasks])
        self.broker.publish(tasks)

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
        if self._backend is not None:
            self._backend.close()

