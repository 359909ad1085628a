"""Celery-on-SQS endpoints: kombu's names, and a --celery-app's transport options on its side."""

from __future__ import annotations

from bridge.brokers.celery_sqs import CelerySqsBroker, entity_name, transport_settings
from bridge.celery_import import CelerySettings
from bridge.cli.sides import _side
from bridge.endpoints import parse_endpoint


def test_kombu_entity_names() -> None:
    assert entity_name("my.queue:x") == "my-queue_x"  # celery-wire.md §4.4
    assert entity_name("a.b.fifo") == "a-b.fifo"
    assert entity_name("we-ird_q") == "we-ird_q"


def test_celery_app_transport_options_reach_the_side() -> None:
    settings = CelerySettings(broker_url="sqs://k:s@localhost:4566",
                              result_backend="redis://h:6379/1",
                              transport_options={"region": "eu-west-1",
                                                 "queue_name_prefix": "pfx-",
                                                 "polling_interval": 1})
    side = _side("celery?queue=my.q", settings, "--from", False)
    assert side.is_sqs and side.queue == "my.q"
    assert side.options == {"region": "eu-west-1", "queue_name_prefix": "pfx-"}
    broker = side.open_broker()
    try:
        assert isinstance(broker, CelerySqsBroker)
        assert broker.name(side.queue) == "pfx-my-q"
        assert broker.client.meta.region_name == "eu-west-1"
        assert broker.client.meta.endpoint_url == "http://localhost:4566"
    finally:
        broker.close()
    assert transport_settings({"region": None, "wait_time_seconds": 2}) == {
        "wait_time_seconds": 2}


def test_sqs_endpoints_parse() -> None:
    celery = parse_endpoint("celery+sqs://k:s@h:4566?queue=celery&backend=redis://h/1")
    machinery = parse_endpoint("machinery+https://sqs.eu-west-1.amazonaws.com/1234?queue=q")
    assert celery.is_sqs and not celery.is_amqp and celery.backend_url == "redis://h/1"
    assert machinery.is_sqs and machinery.queue == "q" and machinery.backend_url == ""
