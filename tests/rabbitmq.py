"""A private rabbitmq-server for the test session, or ``$BRIDGE_TEST_AMQP_URL`` when set.

The node runs in the foreground as the current user (root in a container is fine: the Debian
``/usr/sbin`` wrapper that ``su``-s to ``rabbitmq`` is bypassed), listens on free loopback
ports (AMQP, Erlang distribution and a private epmd), keeps its cookie, config, Mnesia data
and logs under one temporary directory, and never reads ``/etc/rabbitmq``. Readiness is
polled by opening an AMQP connection; :meth:`RabbitMQ.stop` stops the node gracefully
(SIGTERM, which the start script turns into a clean shutdown) and then its epmd.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import amqp

from bridge.localredis import free_port

START_TIMEOUT = 90.0
"""Cold boot of RabbitMQ 3.10 takes a few seconds; slow CI machines get room."""
STOP_TIMEOUT = 30.0
DEBIAN_BIN = "/usr/lib/rabbitmq/bin"
"""Debian's real scripts; ``/usr/sbin/rabbitmq-*`` wrap them in ``su rabbitmq`` for root."""


class RabbitMQError(RuntimeError):
    """The test broker could not be started (the message carries its log's tail)."""


def find_tool(name: str) -> str | None:
    """The real RabbitMQ script (not Debian's ``su`` wrapper), else whatever PATH has."""
    candidate = Path(DEBIAN_BIN) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


@dataclass
class RabbitMQ:
    """One private node; ``url`` is a kombu/Celery broker URL (user guest on loopback)."""

    workdir: Path
    port: int = 0
    dist_port: int = 0
    epmd_port: int = 0
    nodename: str = ""
    start_seconds: float = 0.0
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    console: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    def tail(self, lines: int = 30) -> str:
        """The end of the node's log and of its console output, for error messages."""
        chunks = []
        for path in [*sorted(self.log_dir.glob("*.log")), self.workdir / "console.log"]:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            chunks.append(f"--- {path.name}:\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(chunks) or "(no log)"

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Boot the node and wait until it accepts AMQP connections."""
        server = find_tool("rabbitmq-server")
        if server is None:
            raise RabbitMQError("rabbitmq-server is not installed (Debian: apt-get install "
                                "rabbitmq-server; .ci/setup does it)")
        self._prepare()
        began = time.monotonic()
        self.console = open(self.workdir / "console.log", "wb")  # noqa: SIM115 - see stop()
        self.popen = subprocess.Popen(
            [server], env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=self.console, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(began + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _prepare(self) -> None:
        """Ports, node name, cookie, config and environment, all private to ``workdir``."""
        if not self.port:  # a restart keeps the node's ports, name and data
            self.port, self.dist_port, self.epmd_port = _free_ports(3)
            self.nodename = f"bridge{os.getpid()}x{secrets.token_hex(3)}@localhost"
        home = self.workdir / "home"
        for sub in (home, self.log_dir, self.workdir / "mnesia", self.workdir / "conf.d"):
            sub.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        config = self.workdir / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "log.console = false\nlog.file.level = info\n"
            "disk_free_limit.absolute = 1MB\n"
            "vm_memory_high_watermark.relative = 0.8\n")
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        env_file = self.workdir / "rabbitmq-env.conf"
        env_file.write_text("")
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("RABBITMQ_", "ERL_"))}
        self.env = {
            **inherited,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_CONFIG_FILES": str(self.workdir / "conf.d"),  # not /etc/rabbitmq/conf.d
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(self.workdir / "rabbitmq.pid"),
        }

    def _wait_ready(self, deadline: float) -> None:
        delay = 0.05
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                raise RabbitMQError(f"rabbitmq-server exited ({self.popen.returncode}):\n"
                                    f"{self.tail()}")
            try:
                conn = amqp.Connection(f"127.0.0.1:{self.port}", userid="guest",
                                       password="guest", connect_timeout=2)
                conn.connect()
                conn.close()
                return
            except (OSError, amqp.exceptions.AMQPError):
                pass
            if time.monotonic() > deadline:
                raise RabbitMQError(f"rabbitmq-server not ready after {START_TIMEOUT:.0f} s:\n"
                                    f"{self.tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Graceful stop: SIGTERM, which the start script turns into the same clean shutdown as
        ``rabbitmqctl stop`` without booting a CLI VM; SIGKILL of the node's process group if it
        hangs; then the node's private epmd."""
        proc = self.popen
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            _kill_group(proc.pid)  # a beam left behind by a killed start script
        if self.console is not None:
            self.console.close()
        self._stop_epmd()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> args`` against this node (a second or two each)."""
        tool = find_tool("rabbitmqctl")
        if tool is None:
            raise RabbitMQError("rabbitmqctl is not installed")
        done = subprocess.run([tool, "-n", self.nodename, *args], env=self.env,
                              cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode:
            raise RabbitMQError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def _stop_epmd(self) -> None:
        """``epmd -kill`` on our private port (it refuses while a node is registered)."""
        epmd = shutil.which("epmd")
        if not self.epmd_port or epmd is None or not _listening(self.epmd_port):
            return
        subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                       check=False)


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@contextmanager
def local_rabbitmq(workdir: Path) -> Iterator[RabbitMQ]:
    """Run a private node under ``workdir`` until the block ends."""
    node = RabbitMQ(workdir)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@contextmanager
def rabbitmq_url(workdir: Path) -> Iterator[str]:
    """``$BRIDGE_TEST_AMQP_URL`` if set, else the URL of a private node under ``workdir``."""
    configured = os.environ.get("BRIDGE_TEST_AMQP_URL")
    if configured:
        yield configured
        return
    with local_rabbitmq(workdir) as node:
        yield node.url
