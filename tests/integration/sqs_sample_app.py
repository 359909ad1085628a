"""A Bridge app on the SQS broker for worker subprocess tests
(`mbridge worker -A tests.integration.sqs_sample_app`).

$BRIDGE_TEST_SQS_BROKER (an SQS queue URL prefix), $BRIDGE_TEST_QUEUE, $BRIDGE_TEST_REDIS (the
result backend); the AWS endpoint and credentials come from the environment. A short
visibility timeout lets a killed worker's messages come back quickly.
"""

from __future__ import annotations

import os
import time

from bridge.app import Bridge
from bridge.backends.redis import RedisBackend
from bridge.brokers.sqs import SqsBroker
from bridge.config import Config, SQSConfig

BROKER = os.environ.get("BRIDGE_TEST_SQS_BROKER", "sqs://127.0.0.1:4566")
BACKEND = os.environ.get("BRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BRIDGE_TEST_QUEUE", "sample_tasks")
config = Config(broker=BROKER, result_backend=BACKEND, default_queue=QUEUE,
                sqs=SQSConfig(wait_time_seconds=1, visibility_timeout=2))
app = Bridge(config, broker=SqsBroker(BROKER, config), backend=RedisBackend(BACKEND, config))


@app.task("sleep_ms")
def sleep_ms(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms
