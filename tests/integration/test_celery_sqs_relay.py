"""``mbridge relay`` between Celery-on-SQS and machinery-on-SQS (moto's server mode), both ways:
a real Celery 5.6.2 client's tasks run by a machinery worker (ours on SQS, standing in for Go)
with the results back in ``AsyncResult.get()``; our machinery producer's tasks run by a worker
serving Celery's SQS queue, results back in machinery's ``AsyncResult.get``."""

from __future__ import annotations

import uuid

from bridge.app import Bridge
from bridge.config import Config, SQSConfig
from bridge.endpoints import parse_endpoint
from bridge.handlers.celery import celery_handler_factory
from bridge.relay import RelayOptions, open_relay
from tests.backend_servers import MotoServer
from tests.integration.test_celery_sqs_broker import (
    WAIT,
    close_producer,
    kombu_url,
    producer,
    transport,
)
from tests.integration.test_relay import running
from tests.worker_thread import worker_thread


def celery_side(moto: MotoServer, queue: str, redis_url: str) -> str:
    return (f"celery+{kombu_url(moto)}?queue={queue}&backend={redis_url}"
            f"&region={moto.region}&wait_time_seconds=1")


def machinery_app(moto: MotoServer, queue: str, redis_url: str) -> Bridge:
    moto.client("sqs").create_queue(QueueName=queue)
    app = Bridge(Config(broker=moto.sqs_broker_url, result_backend=redis_url,
                        default_queue=queue, sqs=SQSConfig(wait_time_seconds=1)))

    @app.task("add")
    def add(*values: int) -> int:
        return sum(values)

    return app


def test_celery_sqs_to_machinery_sqs_and_results_back(moto_server: MotoServer,
                                                      redis_url: str) -> None:
    cq, mq = f"cq.{uuid.uuid4().hex[:8]}", f"mq_{uuid.uuid4().hex[:8]}"
    worker_app = machinery_app(moto_server, mq, redis_url)
    relay = open_relay(parse_endpoint(celery_side(moto_server, cq, redis_url)),
                       parse_endpoint(f"machinery+{moto_server.sqs_broker_url}?queue={mq}"
                                      f"&backend={redis_url}"),
                       RelayOptions(poll_interval=0.05, fetch_timeout=0.5))
    client = producer(moto_server, redis_url, cq)
    try:
        with running(relay), worker_thread(worker_app, 4):
            results = [client.send_task("add", (i, 2)) for i in range(20)]
            assert [r.get(timeout=WAIT) for r in results] == [i + 2 for i in range(20)]
    finally:
        close_producer(client)


def test_machinery_sqs_to_celery_sqs_and_results_back(moto_server: MotoServer,
                                                      redis_url: str) -> None:
    cq, mq = f"cq.{uuid.uuid4().hex[:8]}", f"mq_{uuid.uuid4().hex[:8]}"
    sender = machinery_app(moto_server, mq, redis_url)
    served = Bridge(Config(broker=redis_url, result_backend=redis_url,
                           default_queue=f"unused_{uuid.uuid4().hex[:8]}"))

    @served.task("add")
    def add(x: int, y: int) -> int:
        return x + y

    handler = celery_handler_factory(kombu_url(moto_server), redis_url, cq, None,
                                     transport(moto_server))
    relay = open_relay(parse_endpoint(f"machinery+{moto_server.sqs_broker_url}?queue={mq}"
                                      f"&backend={redis_url}"),
                       parse_endpoint(celery_side(moto_server, cq, redis_url)),
                       RelayOptions(poll_interval=0.05, fetch_timeout=0.5))
    try:
        with running(relay), worker_thread(served, 4, handlers=[handler], machinery=False):
            results = [sender.send_task("add", i, 3) for i in range(20)]
            assert [r.get(timeout=WAIT) for r in results] == [i + 3 for i in range(20)]
    finally:
        sender.close()
