"""``python -m bridge.cli``: the ``mbridge`` command."""

from bridge.cli import entry

if __name__ == "__main__":
    entry()
