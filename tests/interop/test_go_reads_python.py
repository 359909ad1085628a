"""Real Go machinery decodes what Python wrote to the same values and the same bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import VERSIONS
from tests.interop.python_corpus import write_corpus


@pytest.mark.go
@pytest.mark.parametrize("version", VERSIONS)
def test_go_decodes_python_messages_identically(version: str, harness: dict[str, Path],
                                                tmp_path: Path) -> None:
    count = write_corpus(tmp_path)
    run = subprocess.run([str(harness[version]), "check", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    failures = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert not failures, "\n".join(failures[:20])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"{count} passed, 0 failed" in run.stdout
