"""The ``mbridge`` command (entry point ``bridge.cli:entry``); one module per command group:

``decode``; ``worker``; ``tasks`` (send, result); ``queues`` (inspect, requeue-dead);
``migrate``; ``relay``; ``demo``. ``group`` assembles them under :data:`main` (the click
group, imported on first use); ``options`` holds what the app-opening commands share;
``pretty`` the human-readable message views. Also runnable as ``python -m bridge.cli``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.cli.group import main

__all__ = ["entry", "main"]


def entry() -> None:
    """Run ``mbridge``; a Ctrl-C while its modules are still loading is one line too."""
    from bridge.cli.exits import EXIT_INTERRUPTED

    try:
        from bridge.cli.group import main
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted (Ctrl-C) while mbridge was starting\n")
        sys.exit(EXIT_INTERRUPTED)
    main()


def __getattr__(name: str) -> Any:
    """``main``, the click group, imported on first use (PEP 562)."""
    if name == "main":
        from bridge.cli.group import main

        return main
    raise AttributeError(f"module 'bridge.cli' has no attribute {name!r}")
