"""A Celery app's tasks on `mbridge worker --celery-app` run in Celery's own tracer: the
time limits of the message and of `celery control time_limit` reach the task in its thread
(the canvas, replace, ignore_result and the rest: Celery's own suite, tests/celery_suite/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded

from tests.integration.test_celery_remote_control import Node


@pytest.fixture
def node(tmp_path: Path, redis_url: str) -> Iterator[Node]:
    started = Node(tmp_path, redis_url, redis_url)
    try:
        yield started
    finally:
        started.close()


def test_soft_time_limit_of_the_message_is_raised_in_the_task(node: Node) -> None:
    client = node.client
    result = client.send_task("tasks.spin", (30,), queue=node.queue, soft_time_limit=1)
    assert result.get(timeout=20) == "soft limit"


def test_hard_time_limit_fails_the_task_with_celerys_exception(node: Node) -> None:
    client = node.client
    result = client.send_task("tasks.spin", (30,), queue=node.queue, time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    # the worker goes on
    assert client.send_task("tasks.add", (2, 3), queue=node.queue).get(timeout=20) == 5


def test_celery_control_time_limit_sets_the_tasks_limits(node: Node) -> None:
    reply = node.control("time_limit", "tasks.spin", "1", "20")
    assert "time limits set successfully" in reply.stdout, reply.stdout + reply.stderr
    result = node.client.send_task("tasks.spin", (30,), queue=node.queue)
    assert result.get(timeout=20) == "soft limit"
    reply = node.control("time_limit", "tasks.nothing_here", "1")
    assert "unknown task" in reply.stdout + reply.stderr


def test_a_task_without_limits_runs_to_its_end(node: Node) -> None:
    assert node.client.send_task("tasks.spin", (0.3,), queue=node.queue).get(
        timeout=20) == "finished"

