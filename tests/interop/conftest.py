"""The Go harness (real machinery v1 and v2), built once per test session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import ROOT
from tests.interop.gocraft_go import gocraft_bin  # noqa: F401  (a fixture: pytest finds it here)

VERSIONS = ("v1", "v2")


@pytest.fixture(scope="session")
def harness() -> dict[str, Path]:
    """Paths of the built harness binaries, by machinery version."""
    if shutil.which("go") is None:
        pytest.fail("Go is not installed: the interop tests need it (see .ci/run)")
    subprocess.run(["bash", str(ROOT / "build.sh")], check=True, timeout=1200)
    binaries = {v: ROOT / "bin" / f"harness-{v}" for v in VERSIONS}
    for path in binaries.values():
        assert path.is_file(), path
    return binaries
