"""A task module for ``mbridge worker -A examples/tasks.py --config examples/redis.yml``.

``Bridge()`` names no config: it takes the command's ``--config`` (or, without one,
machinery's environment variables: BROKER, RESULT_BACKEND, DEFAULT_QUEUE ...), so the same
module runs from any directory and against any environment.
"""

from bridge import Bridge, Int32

app = Bridge()


@app.task("add")
def add(*values: int) -> int:
    """machinery's example task: int64 args in, an int64 result out."""
    return sum(values)


@app.task("resize")
def resize(image: bytes, width: Int32) -> tuple[bytes, str]:
    """[]byte and int32 in, two results out ([]byte, string)."""
    return image[:width], f"{width}px"
