"""Celery's own integration suite (test_tasks.py and test_canvas.py of the pinned release)
with Celery's embedded worker and with ours, on Redis (and test_tasks.py on RabbitMQ):
every test that passes with Celery's worker passes with ours, apart from
EXPECTED_FAILURES.

The runs take most of an hour, mostly waiting (the suite's own timeouts prove that
something did not happen), so they start in the background when this test is collected
(tests/conftest.py) and this test, moved to the end of the session, collects them."""

from __future__ import annotations

import pytest

from tests.celery_suite.suite import LEG_TIMEOUT, OUT, STARTED, Comparison, report


@pytest.mark.timeout(int(2 * LEG_TIMEOUT + 900))
def test_celery_integration_suite_passes_with_our_worker_where_it_does_with_celerys(
        pytestconfig: pytest.Config) -> None:
    comparison = pytestconfig.stash.get(STARTED, None) or Comparison().start()
    runs = comparison.wait(2 * LEG_TIMEOUT + 600)
    lines, missing = report(runs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for leg in ("redis", "rabbitmq"):
        for worker in ("celery", "bridge"):
            assert (leg, worker) in runs, lines
            # each ran its whole share of the suite: a run that collected nothing proves
            # nothing
            run = runs[leg, worker]
            assert len(run.outcomes) >= (200 if leg == "redis" else 35), (run.summary(),
                                                                          run.log)
    assert len(runs["redis", "celery"].passed()) >= 150, lines
    assert not missing, "\n".join(lines) + f"\nlogs under {OUT}"
