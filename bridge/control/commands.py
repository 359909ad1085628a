"""The remote-control commands our worker answers, by Celery's names and in the shapes of
Celery's replies (``celery/worker/control.py``), so ``celery inspect``, ``celery control``,
``celery status`` and Flower read them as a Celery worker's."""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.control.revoked import RevokedIds
from bridge.control.view import TaskView

log = logging.getLogger("bridge.control")

Command = Callable[..., Any]


class Controllable(Protocol):
    """What the commands may ask of the worker (bridge.worker.Worker)."""

    def stop(self) -> None: ...

    def call_soon(self, action: Callable[[], None]) -> None:
        """Run ``action`` in the worker loop at its next turn."""

    def consumed_queues(self, all_protocols: bool = False) -> list[str]: ...

    def add_queue(self, queue: str) -> None: ...

    def cancel_queue(self, queue: str) -> None: ...


class Shutdown(SystemExit):
    """Raised by ``shutdown`` past kombu's dispatch (as Celery's WorkerShutdown): no reply."""


@dataclass
class ControlState:
    """What every command gets (kombu's Node passes it first)."""

    hostname: str
    view: TaskView
    revoked: RevokedIds
    worker: Controllable
    task_names: Callable[[], list[str]]
    concurrency: int
    pool: str
    broker_info: dict[str, Any] = field(default_factory=dict)
    conf: dict[str, Any] = field(default_factory=dict)
    prefetch_count: int = 0
    clock: Callable[[], int] = lambda: 0
    events: Any = None
    """The event dispatcher (enable_events / disable_events / heartbeat), when there is one."""
    started: float = field(default_factory=time.monotonic)
    task_of: Callable[[str], Any] = lambda name: None
    """The registered task of a name (bridge.task.RegisteredTask), or None."""


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


# ---------------------------------------------------------------------- inspect


def ping(state: ControlState, **_: Any) -> dict[str, Any]:
    return ok("pong")


def stats(state: ControlState, **_: Any) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "total": dict(state.view.total),
        "pid": os.getpid(),
        "clock": str(state.clock()),
        "uptime": int(time.monotonic() - state.started),
        "pool": {"implementation": f"bridge:{state.pool}",
                 "max-concurrency": state.concurrency, "processes": [os.getpid()],
                 "max-tasks-per-child": "N/A", "put-guarded-by-semaphore": False,
                 "timeouts": [0, 0]},
        "broker": state.broker_info,
        "prefetch_count": state.prefetch_count,
        "rusage": {"utime": usage.ru_utime, "stime": usage.ru_stime, "maxrss": usage.ru_maxrss,
                   "ixrss": usage.ru_ixrss, "idrss": usage.ru_idrss, "isrss": usage.ru_isrss,
                   "minflt": usage.ru_minflt, "majflt": usage.ru_majflt,
                   "nswap": usage.ru_nswap, "inblock": usage.ru_inblock,
                   "oublock": usage.ru_oublock, "msgsnd": usage.ru_msgsnd,
                   "msgrcv": usage.ru_msgrcv, "nsignals": usage.ru_nsignals,
                   "nvcsw": usage.ru_nvcsw, "nivcsw": usage.ru_nivcsw},
        "sw_ident": "machinery-bridge",
        "queues": state.view.queues(),
        "consuming": state.worker.consumed_queues(all_protocols=True),
    }


def active(state: ControlState, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    return state.view.active()


def reserved(state: ControlState, **_: Any) -> list[dict[str, Any]]:
    return state.view.reserved()


def scheduled(state: ControlState, **_: Any) -> list[dict[str, Any]]:
    """ETA tasks wait in the broker's delayed set, not in this worker's memory (see
    ``mbridge inspect``): none is scheduled here."""
    return []


def revoked(state: ControlState, **_: Any) -> list[str]:
    return list(state.revoked)


def registered(state: ControlState, taskinfoitems: Any = None, builtins: bool = False,
               **_: Any) -> list[str]:
    names = state.task_names()
    return sorted(n for n in names if builtins or not n.startswith("celery."))


def query_task(state: ControlState, ids: Any = (), **_: Any) -> dict[str, Any]:
    wanted = [ids] if isinstance(ids, str) else list(ids or ())
    return {task_id: [where, info] for task_id, (where, info) in state.view.find(wanted).items()}


def active_queues(state: ControlState, **_: Any) -> list[dict[str, Any]]:
    return [_queue_dict(name) for name in state.worker.consumed_queues()]


def conf(state: ControlState, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    return dict(state.conf)


def report(state: ControlState, **_: Any) -> dict[str, Any]:
    return ok(f"software -> machinery-bridge (Celery remote control)\nplatform -> system:"
              f"{platform.system()} arch:{platform.machine()} "
              f"imp:{platform.python_implementation()} python:{platform.python_version()}\n"
              f"hostname -> {state.hostname}\npool -> {state.pool} x {state.concurrency}\n"
              f"queues -> {', '.join(state.worker.consumed_queues())}")


def clock(state: ControlState, **_: Any) -> dict[str, Any]:
    return {"clock": state.clock()}


def hello(state: ControlState, from_node: str = "", revoked: Any = None,
          **_: Any) -> dict[str, Any] | None:
    """A joining worker's sync (Celery's mingle): take its revoked ids, give ours."""
    if from_node == state.hostname:
        return None
    if revoked:
        state.revoked.update(revoked if isinstance(revoked, dict) else list(revoked))
    return {"revoked": state.revoked.as_dict(), "clock": state.clock()}


# ---------------------------------------------------------------------- control


def revoke(state: ControlState, task_id: Any = None, terminate: bool = False,
           signal: Any = None, **_: Any) -> dict[str, Any]:
    """Every id is refused when it comes (also from the delayed set, once due). A task
    already running in a thread cannot be terminated: it runs to its end."""
    ids = [one for one in ([task_id] if isinstance(task_id, str) else list(task_id or ()))
           if one]
    for one in ids:
        state.revoked.add(str(one))
    log.info("tasks revoked: %s", ", ".join(map(str, ids)))
    idstr = ", ".join(map(str, ids))
    if terminate:
        running = [one for one in ids if state.view.is_active(str(one))]
        if running:
            return ok(f"tasks {idstr} flagged as revoked; running in threads, "
                      f"{', '.join(running)} cannot be terminated and will finish")
        return ok("terminate: tasks unknown")
    return ok(f"tasks {set(map(str, ids)) or 'set()'} flagged as revoked")


def revoke_by_stamped_headers(state: ControlState, headers: Any = None,
                              terminate: bool = False, **_: Any) -> dict[str, Any]:
    """Celery's revoke by stamp: every task stamped with one of the values is refused when
    it comes (running ones finish: threads cannot be terminated)."""
    if isinstance(headers, list):
        headers = dict(str(h).split("=", 1) for h in headers)
    headers = dict(headers or {})
    state.revoked.add_stamps(headers)
    log.info("tasks stamped %s revoked", headers)
    if terminate:
        return ok(f"headers {headers} flagged as revoked; running tasks in threads cannot "
                  "be terminated and will finish")
    return ok(f"headers {headers} flagged as revoked, but not terminated")


def time_limit(state: ControlState, task_name: str = "", hard: Any = None, soft: Any = None,
               **_: Any) -> dict[str, Any]:
    """Celery's time_limit: new soft and hard limits for a Celery app's task (raised in its
    thread at the next Python instruction, see bridge.handlers.celery_trace)."""
    task = state.task_of(task_name)
    if task is None:
        log.error("Change time limit attempt for unknown task %s", task_name)
        return nok("unknown task")
    if task.celery_task is None:
        return nok(f"time_limit: {task_name} is a plain function; time limits apply to a "
                   "Celery app's tasks (--celery-app)")
    task.celery_task.soft_time_limit = soft
    task.celery_task.time_limit = hard
    log.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name, soft, hard)
    return ok("time limits set successfully")


def shutdown(state: ControlState, msg: str = "Got shutdown from remote", **_: Any) -> None:
    log.warning(msg)
    state.worker.stop()
    raise Shutdown(0)


def add_consumer(state: ControlState, queue: str = "", exchange: Any = None,
                 exchange_type: Any = None, routing_key: Any = None, **_: Any
                 ) -> dict[str, Any]:
    if not queue:
        return nok("add_consumer needs a queue name")
    state.worker.call_soon(lambda: state.worker.add_queue(queue))
    return ok(f"add consumer {queue}")


def cancel_consumer(state: ControlState, queue: str = "", **_: Any) -> dict[str, Any]:
    state.worker.call_soon(lambda: state.worker.cancel_queue(queue))
    return ok(f"no longer consuming from {queue}")


def enable_events(state: ControlState, **_: Any) -> dict[str, Any]:
    if state.events is None:
        return nok("this worker sends no events (start it with -E)")
    if state.events.enabled:
        return ok("task events already enabled")
    state.events.enabled = True
    return ok("task events enabled")


def disable_events(state: ControlState, **_: Any) -> dict[str, Any]:
    if state.events is None or not state.events.enabled:
        return ok("task events already disabled")
    state.events.enabled = False
    return ok("task events disabled")


def heartbeat(state: ControlState, **_: Any) -> None:
    if state.events is not None:
        state.events.heartbeat_now()


def _unsupported(name: str, why: str) -> Command:
    def command(state: ControlState, **_: Any) -> dict[str, Any]:
        return nok(f"{name}: {why}")
    command.__name__ = name
    return command


def _queue_dict(name: str) -> dict[str, Any]:
    """kombu's ``Queue(name).as_dict(recurse=True)`` for Celery's default direct queue."""
    exchange = {"name": name, "type": "direct", "arguments": None, "durable": True,
                "passive": False, "auto_delete": False, "delivery_mode": None,
                "no_declare": False}
    return {"name": name, "exchange": exchange, "routing_key": name,
            "queue_arguments": None, "binding_arguments": None, "consumer_arguments": None,
            "durable": True, "exclusive": False, "auto_delete": False, "no_ack": False,
            "alias": None, "bindings": [], "no_declare": None, "expires": None,
            "message_ttl": None, "max_length": None, "max_length_bytes": None,
            "max_priority": None}


_THREADS = "tasks run in threads of one process"

PANEL: dict[str, Command] = {
    "ping": ping, "stats": stats, "active": active, "dump_active": active,
    "reserved": reserved, "dump_reserved": reserved, "scheduled": scheduled,
    "dump_schedule": scheduled, "revoked": revoked, "dump_revoked": revoked,
    "registered": registered, "dump_tasks": registered, "query_task": query_task,
    "active_queues": active_queues, "conf": conf, "dump_conf": conf, "report": report,
    "clock": clock, "hello": hello, "revoke": revoke, "shutdown": shutdown,
    "add_consumer": add_consumer, "cancel_consumer": cancel_consumer,
    "enable_events": enable_events, "disable_events": disable_events, "heartbeat": heartbeat,
    "rate_limit": _unsupported("rate_limit", "machinery-bridge has no rate limits"),
    "time_limit": time_limit,
    "revoke_by_stamped_headers": revoke_by_stamped_headers,
    "pool_grow": _unsupported("pool_grow", _THREADS + ", fixed at start (-c)"),
    "pool_shrink": _unsupported("pool_shrink", _THREADS + ", fixed at start (-c)"),
    "autoscale": _unsupported("autoscale", _THREADS + ", fixed at start (-c)"),
    "pool_restart": _unsupported("pool_restart", "restart the worker instead"),
    "terminate": _unsupported("terminate", _THREADS + ": a running task cannot be killed"),
    "memsample": _unsupported("memsample", "not available"),
    "memdump": _unsupported("memdump", "not available"),
    "objgraph": _unsupported("objgraph", "not available"),
    "election": _unsupported("election", "not available"),
}
