"""Result backends: task states, group metas and chord triggering in each system's layout."""

from bridge.backends.base import Backend

__all__ = ["Backend"]
