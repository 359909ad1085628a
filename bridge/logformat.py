"""How every command logs: plain lines (time, level, logger, message) or one JSON object a
line (``--log-format json``) for log shippers, with a task's id, name, queue, event and
run time as fields of their own when the record has them (see bridge.tasklog)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("plain", "json")
TASK_FIELDS = ("task_id", "task_name", "queue", "event", "runtime")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    process's name among its siblings when it has one, the task fields when present, and
    the traceback as ``exception`` when there is one."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process:
            line["process"] = self.process
        for name in TASK_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str, fmt: str = "plain", process: str = "") -> None:
    """Log records of ``level`` and above to stderr in ``fmt`` (``plain`` or ``json``);
    ``process`` names this process among its siblings (``worker-2``) on every line."""
    handler = logging.StreamHandler(sys.stderr)
    plain = PLAIN.replace("%(name)s", f"[{process}] %(name)s") if process else PLAIN
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else logging.Formatter(plain))
    logging.basicConfig(level=level.upper(), handlers=[handler])
