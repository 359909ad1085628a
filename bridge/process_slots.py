"""``--pool processes``: each task thread runs its tasks in a child process of its own.

A ``ProcessPoolExecutor`` shared by every thread breaks for all the tasks in flight when one
child dies (a segfault, the OOM killer, ``os._exit``), refuses every task after, and costs
two helper threads per pool that contend for the GIL with the worker. Here each thread owns
one child and a pipe to it: a task is one message there and one back. A child that dies
fails only the task it was running, with :class:`ChildDied` (recorded as the task's error,
so machinery's retries and Celery's failure handling apply, as Celery reports
``WorkerLostError``), and the thread starts a fresh child for its next task.

Children are forked from a clean single-threaded server (``forkserver``), not from the
threaded worker (a fork of a process whose threads hold locks can inherit a held lock and
hang). Task functions travel by reference, so they must be importable (module level), as
with any process pool.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bridge.errors import BridgeError

_CONTEXT = multiprocessing.get_context("forkserver")


class ChildDied(BridgeError):
    """The child process running a task died before it returned."""


def how_it_ended(exitcode: int | None) -> str:
    """A child's exit code in words (``killed by SIGKILL``, ``exit code 3``)."""
    if exitcode is None:
        return "for an unknown reason"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _serve(conn: Connection) -> None:
    """The child: run each (func, args, kwargs) received, send (ok, value) back. Ctrl-C
    reaches the whole process group: the worker decides, its children finish their task."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            func, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed the pipe: done
        try:
            reply: tuple[bool, Any] = (True, func(*args, **kwargs))
        except BaseException as exc:  # the task's error, for the worker to record
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # a value or an error that does not pickle
            kind = "result" if reply[0] else "error"
            conn.send((False, TypeError(f"the task's {kind} cannot be sent back from its "
                                        f"process ({exc}): {reply[1]!r:.200}")))


class _Child:
    def __init__(self) -> None:
        self.conn, theirs = _CONTEXT.Pipe()
        self.process: BaseProcess = _CONTEXT.Process(target=_serve, args=(theirs,),
                                                      daemon=True, name="bridge-task-child")
        self.process.start()
        theirs.close()

    def stop(self, kill: bool) -> None:
        self.conn.close()  # the child reads EOF and returns
        if kill and self.process.is_alive():
            self.process.kill()


class ProcessSlots:
    """A child process per calling thread, replaced when it dies."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._children: list[_Child] = []
        self._lock = threading.Lock()

    def _child(self) -> _Child:
        child: _Child | None = getattr(self._local, "child", None)
        if child is None:
            child = self._local.child = _Child()
            with self._lock:
                self._children.append(child)
        return child

    def call(self, func: Callable[..., Any], args: Sequence[Any],
             kwargs: Mapping[str, Any]) -> Any:
        """``func(*args, **kwargs)`` in this thread's child; ChildDied if the child dies."""
        child = self._child()
        try:
            child.conn.send((func, tuple(args), dict(kwargs)))
            ok, value = child.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._local.child = None
            with self._lock:
                self._children.remove(child)
            child.stop(kill=True)
            child.process.join(5)
            raise ChildDied(f"the process running {getattr(func, '__name__', 'the task')} "
                            f"died ({how_it_ended(child.process.exitcode)}); the next task runs in "
                            f"a fresh one") from None
        if ok:
            return value
        raise value

    def shutdown(self) -> None:
        """Stop every child now (tasks still running were returned to the queue)."""
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            child.stop(kill=True)
