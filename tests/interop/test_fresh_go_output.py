"""Run real Go machinery now (SendTask/SendChain/SendGroup/SendChord, worker, Redis backend)
and hold what it writes today to the same checks as the committed golden files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures import golden_fixtures
from tests.golden_checks import check_all
from tests.interop.conftest import VERSIONS


@pytest.mark.go
@pytest.mark.parametrize("version", VERSIONS)
def test_fresh_go_output_passes_every_golden_check(version: str, harness: dict[str, Path],
                                                   redis_url: str, tmp_path: Path) -> None:
    db = 14 if version == "v1" else 15  # a DB of its own: gen flushes it
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    out = tmp_path / version
    subprocess.run([str(harness[version]), "gen", "--out", str(out), "--redis", url, "--flush"],
                   check=True, capture_output=True, timeout=300)
    fresh = golden_fixtures(out.parent)
    committed = {g.path.name for g in golden_fixtures() if g.version == version}
    assert {g.path.name for g in fresh} == committed  # regen.sh would write the same set
    failures = []
    for golden in fresh:
        try:
            check_all(golden)
        except AssertionError as exc:
            failures.append(f"{golden.id}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)
