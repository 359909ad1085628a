"""A gocraft/work namespace as one side of ``mbridge migrate`` (``gocraft+redis://…?namespace=
work&queue=<job name>``): its Redis client and key map; no result backend (gocraft keeps
no results)."""

from __future__ import annotations

from bridge.config import ConfigError, redact_url
from bridge.gocraft.keys import GocraftKeys
from bridge.redisconn import RedisClient, connect


class GocraftSide:
    """A namespace on one Redis."""

    def __init__(self, url: str, namespace: str) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://", "redis+socket://")):
            raise ConfigError(f"gocraft/work lives in Redis, not {redact_url(url)}",
                              key="endpoint")
        self.url = url
        self.client: RedisClient = connect(url)
        self.keys = GocraftKeys(namespace)

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        self.client.close()
