"""Private redis-server processes for the tests, in the shapes machinery URLs point at.

Password / ACL users, a unix socket, TLS (certificates made with openssl), Sentinel and a
three-master Cluster: plain processes on free loopback ports, everything under one work
directory, readiness polled (never fixed sleeps), all stopped by :meth:`RedisProcesses.close`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bridge.localredis import free_port

READY_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A test server could not be started (the message carries its log's tail)."""


def missing_tools() -> str:
    """Why these helpers cannot work here ("" when they can)."""
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    return f"not installed: {', '.join(missing)}" if missing else ""


@dataclass
class Process:
    """One running redis-server (or Sentinel) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    socket_path: str = ""

    def tail(self, lines: int = 15) -> str:
        """The end of the log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        """Still running?"""
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@dataclass(frozen=True)
class TLSFiles:
    """A CA, a server certificate it signed (for 127.0.0.1, ::1 and localhost), a client
    certificate it signed, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@dataclass(frozen=True)
class Cluster:
    """Three masters sharing the 16384 slots."""

    nodes: tuple[Process, ...]

    @property
    def ports(self) -> list[int]:
        """The masters' ports."""
        return [node.port for node in self.nodes]


@dataclass(frozen=True)
class SentinelSetup:
    """A master (with a password) and a Sentinel watching it under ``master_name``."""

    master: Process
    sentinel: Process
    master_name: str
    master_password: str
    sentinel_password: str


def wait_until(check: Callable[[], bool], what: str, procs: Sequence[Process],
               timeout: float = READY_TIMEOUT) -> None:
    """Poll ``check`` until it is true; fail with the logs if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            if check():
                return
        except (OSError, redis.RedisError):
            pass
        dead = [proc for proc in procs if not proc.alive()]
        if dead or time.monotonic() > deadline:
            why = f"{dead[0].name} exited" if dead else f"not ready after {timeout:.0f} s"
            logs = "\n".join(f"--- {proc.name}:\n{proc.tail()}" for proc in (dead or procs))
            raise ServerError(f"{what}: {why}\n{logs}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def _unix_open(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        sock.connect(path)
        return True


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as text fields (redis-py may already have parsed it)."""
    info = client.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return {str(k): str(v) for k, v in info.items()}
    text = info.decode() if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def ipv6_loopback() -> bool:
    """Can a socket be bound to ::1 here?"""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port6() -> int:
    """A TCP port on ::1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcesses:
    """Starts test servers under ``workdir``; :meth:`close` stops them all."""

    workdir: Path
    procs: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise ServerError(missing_tools())
        self.server, self.cli = server, cli
        self._socket_dir = ""

    def close(self) -> None:
        """Stop every process, newest first."""
        while self.procs:
            self.procs.pop().stop()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # ------------------------------------------------------------------ plain servers

    def _spawn(self, name: str, argv: list[str]) -> Process:
        log = self.workdir / f"{name}.log"
        popen = subprocess.Popen([*argv, "--logfile", str(log)], cwd=self.workdir,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.STDOUT)
        proc = Process(name, popen, log)
        self.procs.append(proc)
        return proc

    def redis(self, name: str, *args: str, port: int | None = None,
              bind: Sequence[str] = ("127.0.0.1",)) -> Process:
        """A redis-server on ``port`` (a free one by default) plus ``args``; waits until it
        listens on the first ``bind`` address. ``port=0`` means no plain TCP port (then
        ``args`` give a unix socket or a TLS port)."""
        if port is None:
            port = free_port6() if bind[0] == "::1" else free_port()
        data = self.workdir / name
        data.mkdir(exist_ok=True)
        proc = self._spawn(name, [
            self.server, "--port", str(port), "--bind", *bind, "--save", "", "--appendonly",
            "no", "--dir", str(data), "--daemonize", "no", *args])
        proc.port = port
        if "--unixsocket" in args:
            proc.socket_path = args[list(args).index("--unixsocket") + 1]
        tls_port = int(args[list(args).index("--tls-port") + 1]) if "--tls-port" in args else 0
        if tls_port:
            proc.port = tls_port
        if proc.port:
            wait_until(lambda: _tcp_open(bind[0], proc.port), f"redis-server {name}", [proc])
        if proc.socket_path:
            wait_until(lambda: _unix_open(proc.socket_path), f"redis-server {name}", [proc])
        return proc

    def socket_path(self, name: str) -> str:
        """A unix socket path short enough for sun_path (108 bytes)."""
        path = self.workdir / f"{name}.sock"
        if len(str(path)) < 100:
            return str(path)
        if not self._socket_dir:
            self._socket_dir = tempfile.mkdtemp(prefix="br-sock-")
        return os.path.join(self._socket_dir, f"{name}.sock")

    # ------------------------------------------------------------------ TLS

    def tls_files(self) -> TLSFiles:
        """Make the certificates with openssl (EC P-256, valid 2 days)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ServerError("openssl is not installed: cannot make TLS certificates")
        tls = self.workdir / "tls"
        tls.mkdir(exist_ok=True)

        def run(*args: str) -> None:
            done = subprocess.run([openssl, *args], cwd=tls, capture_output=True, text=True,
                                  check=False)
            if done.returncode:
                raise ServerError(f"openssl {args[0]} failed: {done.stderr.strip()}")

        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ("ca", "other-ca"):
            run("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days",
                "2", "-subj", f"/CN=bridge test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        exts = {
            "server": "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
                      "extendedKeyUsage=serverAuth,clientAuth\n",  # cluster bus: both
            "client": "extendedKeyUsage=clientAuth\n",
        }
        for who, ext in exts.items():
            (tls / f"{who}.ext").write_text(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
            run("req", *key, "-keyout", f"{who}.key", "-out", f"{who}.csr",
                "-subj", f"/CN=bridge test {who}")
            run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{who}.crt", "-days", "2",
                "-extfile", f"{who}.ext")
        return TLSFiles(ca=tls / "ca.crt", server_cert=tls / "server.crt",
                        server_key=tls / "server.key", client_cert=tls / "client.crt",
                        client_key=tls / "client.key", other_ca=tls / "other-ca.crt")

    def tls_redis(self, name: str, files: TLSFiles, *args: str, auth_clients: str = "no",
                  bind: Sequence[str] = ("127.0.0.1",)) -> Process:
        """A redis-server speaking only TLS, on a free port."""
        return self.redis(
            name, "--tls-port", str(free_port()), "--tls-cert-file", str(files.server_cert),
            "--tls-key-file", str(files.server_key), "--tls-ca-cert-file", str(files.ca),
            "--tls-auth-clients", auth_clients, *args, port=0, bind=bind)

    # ------------------------------------------------------------------ Sentinel

    def sentinel(self, name: str, master_name: str = "mymaster", master_password: str = "",
                 sentinel_password: str = "", tls: TLSFiles | None = None) -> SentinelSetup:
        """A master and one Sentinel monitoring it (quorum 1); waits until the Sentinel
        reports the master up. With ``tls`` both speak only TLS (the Sentinel reaches the
        master over TLS too)."""
        auth = ("--requirepass", master_password) if master_password else ()
        master = self.tls_redis(f"{name}-master", tls, *auth) if tls else self.redis(
            f"{name}-master", *auth)
        port = free_port()
        conf = self.workdir / f"{name}-sentinel.conf"
        lines = [
            f"port {0 if tls else port}", "bind 127.0.0.1", "daemonize no",
            f"dir {self.workdir}",
            f"sentinel monitor {master_name} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {master_name} 30000",
        ]
        if tls:
            lines += [f"tls-port {port}", f"tls-cert-file {tls.server_cert}",
                      f"tls-key-file {tls.server_key}", f"tls-ca-cert-file {tls.ca}",
                      "tls-auth-clients no", "tls-replication yes"]
        if master_password:
            lines.append(f"sentinel auth-pass {master_name} {master_password}")
        if sentinel_password:
            lines.append(f"requirepass {sentinel_password}")
        conf.write_text("\n".join(lines) + "\n")  # Sentinel rewrites it: must be writable
        sentinel = self._spawn(f"{name}-sentinel", [self.server, str(conf), "--sentinel"])
        sentinel.port = port
        tls_kwargs: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(tls.ca)} if tls else {}
        client = redis.Redis(port=port, password=sentinel_password or None, socket_timeout=1,
                             **tls_kwargs)

        def master_up() -> bool:
            state = client.sentinel_master(master_name)
            return bool(state["is_master"] and not state["is_sdown"] and not state["is_odown"]
                        and state.get("last-ok-ping-reply", 1) < 10_000)

        try:
            wait_until(master_up, f"sentinel {name}", [master, sentinel])
        finally:
            client.close()
        return SentinelSetup(master, sentinel, master_name, master_password, sentinel_password)

    # ------------------------------------------------------------------ Cluster

    def cluster(self, name: str, masters: int = 3, password: str = "",
                tls: TLSFiles | None = None) -> Cluster:
        """``masters`` cluster-enabled servers (``requirepass password`` if given; only TLS,
        the cluster bus included, with ``tls``) joined by ``redis-cli --cluster create``;
        waits until every node sees all slots served."""
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        common = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                  "--cluster-port", "0", *auth)
        nodes = []
        for i in range(masters):
            node_conf = ("--cluster-config-file", str(self.workdir / f"{name}-{i}-nodes.conf"))
            bus = list(common)
            bus[bus.index("--cluster-port") + 1] = str(free_port())
            if tls:
                nodes.append(self.tls_redis(f"{name}-{i}", tls, *bus, *node_conf,
                                            "--tls-cluster", "yes"))
            else:
                nodes.append(self.redis(f"{name}-{i}", *bus, *node_conf))
        env = {**os.environ, "REDISCLI_AUTH": password} if password else None
        tls_cli = ["--tls", "--cacert", str(tls.ca)] if tls else []
        done = subprocess.run(
            [self.cli, *tls_cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=30, check=False, env=env)
        if done.returncode:
            raise ServerError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        tls_kwargs: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(tls.ca)} if tls else {}
        clients = [redis.Redis(port=n.port, password=password or None, socket_timeout=1,
                               **tls_kwargs) for n in nodes]

        def converged() -> bool:
            for client in clients:
                fields = _cluster_info(client)
                if (fields.get("cluster_state") != "ok"
                        or fields.get("cluster_known_nodes") != str(masters)
                        or fields.get("cluster_slots_ok") != "16384"):
                    return False
            return True

        try:
            wait_until(converged, f"cluster {name}", nodes)
        finally:
            for client in clients:
                client.close()
        return Cluster(tuple(nodes))


def with_db(url: str, db: int) -> str:
    """The same Redis server's database ``db``."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


@contextmanager
def empty_dbs(url: str, *dbs: int) -> Iterator[tuple[str, ...]]:
    """The server's databases ``dbs``, flushed before and after."""
    urls = tuple(with_db(url, db) for db in dbs)
    for each in urls:
        redis.Redis.from_url(each).flushdb()
    try:
        yield urls
    finally:
        for each in urls:
            redis.Redis.from_url(each).flushdb()


@contextmanager
def blocks_once(client: Any) -> Iterator[None]:
    """Asserts that what runs inside waited on Redis with one BLMOVE that blocked. A refused
    one (a syntax error, whose reply a quiet call never reads) returns at once, thousands a
    second; a leftover consumer of another test on the same server may add one or two."""
    before = _blmoves(client)
    yield
    calls, refused = (now - then for now, then in zip(_blmoves(client), before, strict=True))
    assert refused == 0 and 1 <= calls <= 3, (calls, refused)


def _blmoves(client: Any) -> tuple[int, int]:
    """BLMOVE calls the server has run so far, and those it refused."""
    stats = client.info("commandstats").get("cmdstat_blmove", {})
    return int(stats.get("calls", 0)), int(stats.get("rejected_calls", 0)) + int(
        stats.get("failed_calls", 0))
