"""The first hour with a task module: ``Bridge()`` (or ``Bridge.from_config("config.yml")``)
in the module and ``mbridge ... --config PATH`` from any directory; the command's file wins,
is read once (one warning per unknown key), and a relative path that is not there says
where it looked."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli_errors import ROOT, command_env, error_line, mbridge


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> Path:
    """``proj/`` with a config.yml on the test Redis (and an unknown key) and task modules."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.yml").write_text(f"broker: '{redis_url}'\nresult_backend: '{redis_url}'\n"
                                     f"default_queue: first_hour\nbrokr: typo\n")
    body = "\n\n@app.task('add')\ndef add(*values: int) -> int:\n    return sum(values)\n"
    (proj / "from_config.py").write_text(
        "from bridge import Bridge\napp = Bridge.from_config('config.yml')\n" + body)
    (proj / "plain.py").write_text("from bridge import Bridge\napp = Bridge()\n" + body)
    (proj / "explicit.py").write_text(
        "from bridge import Bridge\nfrom bridge.config import Config\n"
        "app = Bridge(Config(broker='redis://127.0.0.1:1/0', result_backend="
        "'redis://127.0.0.1:1/0'))\n" + body)
    return proj


@pytest.fixture
def worker(project: Path) -> Iterator[None]:
    """A worker started from another directory: ``-A proj/from_config.py --config ...``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "worker", "-A", "proj/from_config.py", "--config",
         "proj/config.yml", "-c", "2", "-l", "warning"], cwd=project.parent,
        env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.parametrize("module", ["from_config.py", "plain.py", "explicit.py"])
def test_config_flag_wins_from_another_directory(project: Path, module: str) -> None:
    rc, out = mbridge("send", "-A", f"proj/{module}", "--config", "proj/config.yml", "add",
                      "1", cwd=project.parent)
    assert rc == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("Warning: ")]
    assert warnings == ["Warning: unknown machinery config key 'brokr' ignored (did you mean "
                        "'broker'?)"]  # once, and one line


def test_worker_from_another_directory_serves_tasks(project: Path, worker: None) -> None:
    rc, out = mbridge("send", "-A", str(project / "plain.py"), "--config",
                      str(project / "config.yml"), "add", "2", "3", "--wait", "60",
                      cwd=ROOT, timeout=120)
    assert rc == 0, out
    assert out.splitlines()[1] == "5"  # stdout: the task id, then its result


def test_bridge_without_config_reads_the_environment(project: Path, redis_url: str) -> None:
    rc, out = mbridge("send", "-A", "plain.py", "add", "1", cwd=project,
                      env=command_env(BROKER=redis_url, RESULT_BACKEND=redis_url))
    assert rc == 0, out
    assert "Warning" not in out


def test_relative_config_path_that_is_not_there(project: Path) -> None:
    rc, out = mbridge("send", "-A", "proj/from_config.py", "add", "1", cwd=project.parent)
    line = error_line(out)
    assert rc == 2
    assert f"cannot read config file 'config.yml' (looked in {project.parent})" in line
    assert "give its absolute path, or pass mbridge --config PATH" in line
