"""``mbridge decode``: show a machinery message (a file, stdin or a Redis key) typed."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bridge.cli.options import with_logging
from bridge.cli.pretty import decode_any, describe
from bridge.config import Config, ConfigError, redact_url
from bridge.errors import BridgeError


@click.command()
@with_logging()
@click.argument("source", required=False, default="-")
@click.option("--redis", "redis_key", metavar="KEY",
              help="Read KEY from Redis (a queue, the delayed_tasks ZSET or a state key).")
@click.option("--index", default=0, show_default=True, help="Item of a queue or ZSET to read.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="machinery config.yml (its broker URL is used with --redis).")
@click.option("--url", help="Redis URL for --redis (default: the config's broker, or env BROKER).")
@click.option("--raw", is_flag=True, help="Also print the message bytes as Go would write them.")
def decode(source: str, redis_key: str | None, index: int, config_path: str | None,
           url: str | None, raw: bool) -> None:
    """Decode a machinery message (SOURCE file, - for stdin) and show its typed args."""
    if redis_key:
        if url is None:
            try:
                url = Config.load(config_path).broker
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        data = _read_redis(url, redis_key, index)
    elif source == "-":
        data = sys.stdin.buffer.read()
    else:
        data = Path(source).read_bytes()
    try:
        message = decode_any(data)
    except BridgeError as exc:
        raise click.ClickException(f"not a valid machinery message: {exc}") from None
    click.echo("\n".join(describe(message)))
    if raw:
        click.echo(message.to_json().decode("utf-8"))


def _read_redis(url: str, key: str, index: int) -> bytes:
    """One raw message from Redis: a queue list item, a delayed ZSET member or a state key."""
    import redis

    client = redis.Redis.from_url(url)
    kind = _text(client.type(key))
    item: object
    if kind == "list":
        item = client.lindex(key, index)
    elif kind == "zset":
        members: list[object] = list(client.zrange(key, index, index))
        item = members[0] if members else None
    elif kind == "string":
        item = client.get(key)
    elif kind == "none":
        raise click.ClickException(f"no key {key!r} in {redact_url(url)}")
    else:
        raise click.ClickException(f"key {key!r} is a Redis {kind}: not a machinery message")
    if item is None:
        raise click.ClickException(f"{key!r} has no item at index {index}")
    return item if isinstance(item, bytes) else str(item).encode()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
