"""Loading the golden machinery messages that real Go wrote (compat_fixtures/machinery/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.protocol.machinery import GroupMeta, Signature, TaskState

ROOT = Path(__file__).resolve().parent.parent / "compat_fixtures"
MACHINERY = ROOT / "machinery"
KINDS: dict[str, type[Signature] | type[TaskState] | type[GroupMeta]] = {
    "signature": Signature, "task_state": TaskState, "group_meta": GroupMeta,
}


@dataclass(frozen=True)
class Golden:
    version: str
    path: Path
    kind: str
    args: list[dict[str, Any]]
    results: list[dict[str, Any]]
    remarshal: Path | None

    @property
    def go_rewrite(self) -> bytes:
        """What a Go consumer writes back after decoding the file (usually the file itself)."""
        return (self.remarshal or self.path).read_bytes()

    @property
    def id(self) -> str:
        return f"{self.version}/{self.path.name}"


def golden_fixtures(directory: Path = MACHINERY) -> list[Golden]:
    """Every golden file listed in a ``*/manifest.json`` under ``directory``."""
    found = []
    for manifest in sorted(directory.glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        for entry in data["fixtures"]:
            found.append(Golden(
                version=data["version"], path=manifest.parent / entry["file"],
                kind=entry["kind"], args=entry.get("args") or [],
                results=entry.get("results") or [],
                remarshal=manifest.parent / entry["remarshal"] if entry.get("remarshal") else None,
            ))
    return found
