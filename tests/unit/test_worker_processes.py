"""What each of ``--processes N`` workers takes from its index."""

from __future__ import annotations

import json
import logging
import os

import pytest

from bridge.cli.worker_processes import (
    ENV,
    SPIN_ENV,
    indexed_node,
    indexed_port,
    process_index,
    spin_env,
)
from bridge.logformat import JsonFormatter


def test_node_names_get_the_index_before_the_host() -> None:
    assert indexed_node("bridge@box.example", 2) == "bridge-2@box.example"
    assert indexed_node("bridge@box", 0) == "bridge@box"  # one worker: as given
    assert indexed_node("plain", 3) == "plain-3"


def test_metrics_ports_count_up_from_the_one_given() -> None:
    assert indexed_port(9100, 1) == 9100
    assert indexed_port(9100, 3) == 9102
    assert indexed_port(0, 3) == 0  # any free port, for each
    assert indexed_port(None, 2) is None
    assert indexed_port(9100, 0) == 9100


@pytest.mark.parametrize(("value", "index"), [("", 0), ("2", 2), ("x", 0)])
def test_the_index_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                              index: int) -> None:
    monkeypatch.setenv(ENV, value)
    assert process_index() == index
    assert ENV not in os.environ  # not passed on to what the worker starts


def test_json_lines_name_the_worker_process() -> None:
    record = logging.LogRecord("bridge.worker", logging.INFO, __file__, 1, "up", None, None)
    assert json.loads(JsonFormatter("worker-2").format(record))["process"] == "worker-2"
    assert "process" not in json.loads(JsonFormatter().format(record))


@pytest.mark.parametrize(("processes", "cores", "added"), [
    (1, 2, {}), (2, 2, {SPIN_ENV: "0"}), (4, 2, {SPIN_ENV: "0"}), (2, 4, {}),
    (3, 4, {SPIN_ENV: "0"}), (1, None, {SPIN_ENV: "0"}),
])
def test_workers_spin_for_replies_only_with_two_cores_each(
        monkeypatch: pytest.MonkeyPatch, processes: int, cores: int | None,
        added: dict[str, str]) -> None:
    monkeypatch.delenv(SPIN_ENV, raising=False)
    assert spin_env(processes, cores) == added


def test_a_spin_set_by_the_user_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SPIN_ENV, "50")
    assert spin_env(4, 2) == {}
