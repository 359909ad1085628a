"""No credential is echoed, in any encoding: URL-encoded once or more (as README says to
write an endpoint's ``backend``), in the userinfo or a password parameter, through
``redact_url`` and through the real commands' one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import redact_url

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2secret"


def _encoded(text: str, levels: int) -> str:
    for _ in range(levels):
        text = quote(text, safe="")
    return text


@pytest.mark.parametrize("levels", [0, 1, 2, 3])
@pytest.mark.parametrize("backend", [
    f"redis://:{SECRET}@127.0.0.1:6379/1", f"redis://user:{SECRET}@h/1",
    f"redis://{SECRET}@h/1", f"redis://h/1?password={SECRET}",
    f"rediss://:{SECRET}@h:6380/0?ssl_cert_reqs=none",
])
def test_an_encoded_backend_is_masked(backend: str, levels: int) -> None:
    for side in ("celery+redis://h:6379/0", "celerx+redis://h:6379/0", "celery+redis//h/0"):
        spec = f"{side}?queue=celery&backend={_encoded(backend, levels)}"
        shown = redact_url(spec)
        assert SECRET not in shown and quote(SECRET) not in shown, shown


_password = st.text(st.characters(blacklist_categories=("Cs",)), min_size=6, max_size=20)


@settings(max_examples=300, deadline=None)
@given(_password, st.integers(0, 3), st.sampled_from(["redis", "rediss", "amqp", "mongodb"]))
def test_no_password_survives_redaction(password: str, levels: int, scheme: str) -> None:
    safe = quote(password, safe="")
    url = f"{scheme}://user:{safe}@host:1/0"
    spec = f"celery+redis://h/0?backend={_encoded(url, levels)}"
    shown = redact_url(spec)
    # a password that is also part of the rest of the URL ("rediss", "host:1") says nothing
    without = spec.replace(_encoded(safe, levels), "")
    for form in {password, safe, _encoded(safe, 1), _encoded(safe, 2)}:
        if len(form) >= 6 and form not in without:
            assert form not in shown, (spec, shown)


@pytest.mark.parametrize("args", [
    ["relay", "--from", f"celerx+redis://127.0.0.1:1/0?backend=redis%3A%2F%2F%3A{SECRET}%40h",
     "--to", "machinery+redis://127.0.0.1:1/0"],
    ["migrate", f"celery+redis//127.0.0.1:1/0?backend={_encoded(f'redis://u:{SECRET}@h', 2)}",
     "machinery+redis://127.0.0.1:1/0"],
    ["migrate", "machinery+redis://127.0.0.1:1/0",
     f"celery+redis:/127.0.0.1:1/0?backend={_encoded(f'redis://:{SECRET}@h/1', 1)}"],
])
def test_commands_never_echo_a_password(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert SECRET not in output and "***" in output, output
