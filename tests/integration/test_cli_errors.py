"""Everyday mistakes, run through the real ``mbridge`` command: one line naming what is wrong
and the fix, exit 2 for usage and configuration errors, 1 for what failed while running,
no traceback unless ``--traceback``, and no password in any of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.localredis import free_port

ROOT = Path(__file__).resolve().parents[2]
MACHINERY_ENV = ("BROKER", "RESULT_BACKEND", "DEFAULT_QUEUE", "LOCK")


def command_env(**extra: str) -> dict[str, str]:
    """This environment without machinery's variables, with this checkout's ``bridge``."""
    env = {k: v for k, v in os.environ.items() if k not in MACHINERY_ENV}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def mbridge(*args: str, cwd: Path = ROOT, timeout: float = 60,
            env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=env or command_env())
    return done.returncode, done.stdout + done.stderr


def config(tmp_path: Path, broker: str, backend: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(f"broker: '{broker}'\nresult_backend: '{backend}'\n")
    return str(path)


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


def test_unreachable_redis_broker(tmp_path: Path) -> None:
    dead = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    rc, out = mbridge("worker", "--config", config(tmp_path, dead, dead))
    line = error_line(out)
    assert rc == 1
    assert "broker redis://:***@127.0.0.1:" in line and "cannot be reached" in line
    assert "fix `broker`" in line
    assert "s3cret" not in out


def test_unreachable_rabbitmq_broker(tmp_path: Path) -> None:
    port = free_port()
    rc, out = mbridge("worker", "--config", config(
        tmp_path, f"amqp://guest:s3cret@127.0.0.1:{port}/",
        f"redis://127.0.0.1:{free_port()}/0"))
    line = error_line(out)
    assert rc == 1
    assert f"broker amqp://guest:***@127.0.0.1:{port}/ cannot be reached" in line
    assert "s3cret" not in out


def test_unsupported_backend_scheme_is_a_config_error(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    rc, out = mbridge("worker", "--config", config(tmp_path, dead, "nosuch://h:1/"))
    line = error_line(out)
    assert rc == 2
    assert "result_backend: unsupported URL scheme nosuch://" in line


def test_send_to_an_unreachable_broker(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    rc, out = mbridge("send", "--config", config(tmp_path, dead, dead), "add", "1", "2")
    line = error_line(out)
    assert rc == 1
    assert "cannot be reached" in line


def test_traceback_when_asked(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    rc, out = mbridge("--traceback", "send", "--config", config(tmp_path, dead, dead),
                      "add", "1", "2")
    assert rc == 1
    assert "Traceback (most recent call last)" in out


def test_app_module_that_does_not_exist(tmp_path: Path) -> None:
    rc, out = mbridge("worker", "-A", "no_such_module.tasks", cwd=tmp_path)
    line = error_line(out)
    assert rc == 2
    assert "cannot import 'no_such_module.tasks'" in line and "-A path/to/tasks.py" in line


@pytest.mark.parametrize("form", ["file", "dotted"])
def test_app_given_as_a_file_path_or_a_module(tmp_path: Path, form: str) -> None:
    package = tmp_path / "proj"
    package.mkdir()
    (package / "mytasks.py").write_text(
        "from bridge import Bridge\nfrom bridge.config import Config\n"
        "app = Bridge(Config(broker='redis://127.0.0.1:1/0', result_backend="
        "'redis://127.0.0.1:1/0'))\n\n@app.task('hello')\ndef hello() -> str:\n"
        "    return 'hi'\n")
    target = str(package / "mytasks.py") if form == "file" else "mytasks"
    rc, out = mbridge("send", "-A", target, "hello", cwd=tmp_path if form == "file" else package)
    line = error_line(out)  # the app loaded; only its broker is missing
    assert rc == 1 and "cannot be reached" in line


def test_missing_app_file(tmp_path: Path) -> None:
    rc, out = mbridge("worker", "-A", str(tmp_path / "nope.py"))
    assert rc == 2
    assert "no such file" in error_line(out)


# ------------------------------------------------------------------ credentials, code, flags


def test_rabbitmq_refusing_the_login(tmp_path: Path, amqp_url: str, redis_url: str) -> None:
    refused = amqp_url.replace("guest:guest@", "guest:s3cret@")
    assert refused != amqp_url
    for command in (["worker"], ["send", "add", "1"], ["inspect"]):
        rc, out = mbridge(*command, "--config", config(tmp_path, refused, redis_url))
        line = error_line(out)
        assert rc == 2, out
        assert "broker amqp://guest:***@127.0.0.1:" in line and "refused the login" in line
        assert "ACCESS_REFUSED" in line and "fix the user and password in `broker`" in line
        assert "s3cret" not in out


def test_unsupported_annotation_names_the_task_and_the_parameter(tmp_path: Path) -> None:
    module = tmp_path / "tasks.py"
    module.write_text("from bridge import Bridge\napp = Bridge()\n\n\n@app.task('configure')\n"
                      "def configure(name: str, settings: dict) -> None:\n    pass\n")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    rc, out = mbridge("worker", "-A", str(module), "--config", config(tmp_path, dead, dead))
    line = error_line(out)
    assert rc == 2
    assert f"task 'configure' ({module}:5): parameter 'settings' (dict) has no machinery " \
           "Go type; annotate it with bool, int, float, str, bytes, list[T]" in line


@pytest.mark.parametrize("command", [
    ["worker"], ["demo"], ["relay", "--from", "celery", "--to", "machinery"],
    ["migrate", "celery", "machinery"]])
def test_one_loglevel_vocabulary(command: list[str]) -> None:
    rc, out = mbridge(*command, "-l", "verbose")
    line = error_line(out)
    assert rc == 2
    assert "'verbose' is not one of 'debug', 'info', 'warning', 'error', 'critical'" in line


def test_no_config_at_all_says_so(tmp_path: Path) -> None:
    rc, out = mbridge("inspect", cwd=tmp_path, timeout=120)
    warning = [line for line in out.splitlines() if line.startswith("Warning: ")]
    assert warning == ["Warning: no machinery config: neither --config nor BROKER is set, so "
                       "machinery's default broker amqp://guest:***@localhost:5672/ is used; "
                       "pass --config config.yml or set BROKER (and RESULT_BACKEND)"], out
    if rc:  # no RabbitMQ on localhost: the broker it tried, named
        assert rc == 1 and "broker amqp://guest:***@localhost:5672/" in error_line(out)


# ------------------------------------------------------------------ Ctrl-C during start-up


def interrupt(args: list[str], tmp_path: Path, ready: str, timeout: float = 60
              ) -> tuple[int, str]:
    """Start ``mbridge ARGS``, send SIGINT once its output shows ``ready``; (rc, output)."""
    log = tmp_path / "output.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env=command_env())
    deadline = time.monotonic() + timeout
    while ready not in log.read_text() and proc.poll() is None:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    time.sleep(0.3)  # into the call that waits on the silent server
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30), log.read_text()


def test_ctrl_c_while_connecting(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        rc, out = interrupt(["worker", "--config", config(tmp_path, url, url)], tmp_path,
                            ready="INFO bridge: 0 tasks")
    assert rc == 130, out
    assert error_line(out) == "Error: interrupted (Ctrl-C)"


def test_ctrl_c_while_the_task_module_imports(tmp_path: Path) -> None:
    module = tmp_path / "slow_tasks.py"
    module.write_text("import sys, time\nfrom bridge import Bridge\napp = Bridge()\n"
                      "print('importing', flush=True)\ntime.sleep(60)\n")
    rc, out = interrupt(["send", "-A", str(module), "add"], tmp_path, ready="importing")
    assert rc == 130, out
    assert error_line(out) == "Error: interrupted (Ctrl-C)"


# ------------------------------------------------------------------ unreachable hosts


@pytest.mark.parametrize("command", ["demo", "inspect", "requeue-dead", "result", "migrate",
                                     "relay"])
def test_unreachable_host(tmp_path: Path, command: str) -> None:
    port = free_port()
    dead = f"redis://:s3cret@127.0.0.1:{port}/0"
    args = {
        "migrate": ["migrate", f"celery+{dead}?queue=celery", f"machinery+{dead}"],
        "relay": ["relay", "--from", f"celery+{dead}?queue=celery&backend={dead}",
                  "--to", f"machinery+{dead}"],
        "result": ["result", "--config", config(tmp_path, dead, dead), "some-task-id"],
    }.get(command, [command, "--config", config(tmp_path, dead, dead)])
    rc, out = mbridge(*args, timeout=120)
    line = error_line(out)
    assert rc == 1, out
    assert f"redis://:***@127.0.0.1:{port}/0 cannot be reached" in line
    assert "start it, or fix " in line
    assert "s3cret" not in out


@pytest.mark.parametrize("command", [
    ["worker", "--no-machinery"], ["relay", "--from", "celery", "--to", "machinery"],
    ["migrate", "celery", "machinery"]])
def test_celery_app_that_cannot_be_imported(tmp_path: Path, command: list[str]) -> None:
    rc, out = mbridge(*command, "--celery-app", "no_such_proj.celery:app", cwd=tmp_path)
    line = error_line(out)
    assert rc == 2
    assert "--celery-app no_such_proj.celery:app: cannot import no_such_proj.celery" in line
