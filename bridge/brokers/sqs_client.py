"""Reaching SQS: where machinery's queues are (the broker URL), a boto3 client, queue URLs,
and AWS errors as one line naming the fix.

Shared by every SQS consumer of ours (machinery's broker now, Celery's later). Broker URLs:

* ``https://sqs.<region>.amazonaws.com/<account>`` (machinery's form): queue URL = broker +
  ``/`` + queue name; the region comes from the host and the endpoint from boto3's own chain
  (so ``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL`` still redirect it, as aws-sdk-go-v2 does);
* any other ``http(s)://host[:port]/<account>`` (a local SQS, a VPC endpoint; machinery wants
  ``DISABLE_STRICT_SQS_CHECK`` for those): the same prefix rule, the endpoint is the URL's origin;
* ``sqs://HOST:PORT[/ACCOUNT]`` (the Go harness's shorthand for a local SQS on plain HTTP):
  endpoint ``http://HOST:PORT``, prefix ``http://HOST:PORT/ACCOUNT`` (account 123456789012,
  moto's and the AWS docs', when omitted);
* ``sqs://`` with no host: the endpoint and region of boto3's chain, queue URLs from GetQueueUrl.

``sqs://KEY:SECRET@...`` carries credentials; otherwise they come from boto3's standard chain
(environment, profile, role). A local endpoint (not ``*.amazonaws.com``) with no credentials
in the environment gets dummy ones: moto, ElasticMQ and LocalStack accept any.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from bridge.config import ConfigError, redact_url
from bridge.errors import Unreachable

__all__ = ["QueueUrls", "SqsLocation", "explain", "is_outage", "is_sqs_url", "new_client"]

DEFAULT_ACCOUNT = "123456789012"
"""moto's default account, and the one the AWS docs use in queue URLs."""

_AWS_HOST = re.compile(
    r"^(?:sqs(?:-fips)?\.(?P<region>[a-z0-9-]+)|(?P<legacy>[a-z0-9-]+)\.queue|queue)"
    r"\.amazonaws\.com(?:\.cn)?$")
_VPCE_REGION = re.compile(r"\.sqs\.(?P<region>[a-z0-9-]+)\.vpce\.amazonaws\.com(?:\.cn)?$")
_OUTAGES = ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
            "ConnectTimeoutError", "ConnectionError", "HTTPClientError")
_REFUSED = frozenset({"InvalidClientTokenId", "UnrecognizedClientException",
                      "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
                      "ExpiredToken", "InvalidAccessKeyId", "IncompleteSignature",
                      "MissingAuthenticationToken", "InvalidSecurity", "KMS.AccessDeniedException"})
_BUSY = frozenset({"ServiceUnavailable", "InternalError", "ThrottlingException",
                   "RequestThrottled", "AWS.SimpleQueueService.RequestThrottled"})
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def is_sqs_url(url: str) -> bool:
    """Whether machinery (or we) read ``url`` as an SQS broker URL."""
    return url.startswith(("sqs://", "https://", "http://"))


@dataclass(frozen=True)
class SqsLocation:
    """Where a broker URL's queues are and how to reach them."""

    url: str
    """The broker URL as configured."""
    prefix: str | None
    """Queue URL = prefix + "/" + name; None: ask GetQueueUrl (``sqs://`` without a host)."""
    endpoint_url: str | None
    """None: boto3's own resolution (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL, then AWS)."""
    region: str | None
    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> SqsLocation:
        """Read a broker URL (see the module docstring); ``endpoint_url`` overrides."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        key = unquote(parts.username) if parts.username else None
        secret = unquote(parts.password) if parts.password else None
        if parts.scheme == "sqs":
            if not host:
                return cls(url, None, endpoint_url, None, key, secret)
            origin = f"http://{parts.netloc.rpartition('@')[2]}"
            account = parts.path.strip("/") or DEFAULT_ACCOUNT
            return cls(url, f"{origin}/{account}", endpoint_url or origin, None, key, secret)
        if parts.scheme not in ("http", "https") or not host:
            raise ConfigError(f"broker: {redact_url(url)} is not an SQS queue URL prefix: use "
                              "https://sqs.<region>.amazonaws.com/<account> or "
                              "sqs://HOST:PORT[/ACCOUNT]", key="broker")
        prefix = url.rstrip("/")
        if "@" in parts.netloc:  # credentials never travel inside queue URLs
            prefix = prefix.replace(parts.netloc, parts.netloc.rpartition("@")[2], 1)
        aws = _AWS_HOST.match(host)
        if aws:
            region = aws.group("region") or aws.group("legacy") or "us-east-1"
            return cls(url, prefix, endpoint_url, region, key, secret)
        vpce = _VPCE_REGION.search(host)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        return cls(url, prefix, endpoint_url or origin, vpce.group("region") if vpce else None,
                   key, secret)

    @property
    def is_local(self) -> bool:
        """An endpoint of our own choosing that is not AWS (moto, ElasticMQ, LocalStack)."""
        if self.endpoint_url is None:
            return False
        host = (urlsplit(self.endpoint_url).hostname or "").lower()
        return not host.endswith((".amazonaws.com", ".amazonaws.com.cn"))

    def describe(self) -> str:
        """The broker URL for messages, credentials masked."""
        return redact_url(self.url)


def new_client(location: SqsLocation, *, read_timeout: float = 60.0,
               pool_size: int = 32) -> Any:
    """A boto3 SQS client for ``location`` (thread-safe; share it between threads)."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import NoRegionError
    except ImportError:
        raise ConfigError("broker: the SQS broker needs boto3: pip install "
                          "'machinery-bridge[sqs]'", key="broker") from None
    key, secret = location.access_key, location.secret_key
    if key is None and location.is_local and not _credentials_configured():
        key = secret = "test"
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret)
    region = location.region or session.region_name
    if region is None:
        if location.prefix is not None and location.endpoint_url is not None:
            region = "us-east-1"  # a local endpoint: any region will do
        else:
            raise ConfigError(f"broker {location.describe()}: no AWS region: set AWS_REGION "
                              "(or AWS_DEFAULT_REGION, or a profile's region)", key="broker")
    config = BotoConfig(retries={"mode": "standard", "max_attempts": 3},
                        max_pool_connections=pool_size, connect_timeout=10,
                        read_timeout=read_timeout, tcp_keepalive=True)
    try:
        return session.client("sqs", region_name=region, endpoint_url=location.endpoint_url,
                              config=config)
    except NoRegionError:  # pragma: no cover - the region is always given above
        raise ConfigError(f"broker {location.describe()}: no AWS region: set AWS_REGION",
                          key="broker") from None


def _credentials_configured() -> bool:
    return any(os.environ.get(name) for name in (
        "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_outage(exc: BaseException) -> bool:
    """The endpoint cannot be reached right now, or is overloaded (worth waiting for)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if any(cls.__name__ in _OUTAGES and cls.__module__.startswith("botocore")
           for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) \
        if isinstance(response, dict) else 0
    return (isinstance(status, int) and status >= 500) or error_code(exc) in _BUSY


def is_missing_queue(exc: BaseException) -> bool:
    """SQS says the queue does not exist."""
    return error_code(exc) in _NO_QUEUE


def explain(exc: BaseException, where: str, queue: str = "") -> Unreachable | None:
    """``exc`` as one line naming the fix when it means SQS cannot be used (unreachable,
    credentials refused or missing, queue missing); None for any other error."""
    text = " ".join(str(exc).split())
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, Unreachable):
        return exc
    if is_outage(exc):
        return Unreachable(f"{where} is unreachable ({text}): start the SQS endpoint, or fix "
                           "broker / AWS_ENDPOINT_URL")
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return Unreachable(f"{where}: no usable AWS credentials ({text}): set "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role")
    code = error_code(exc)
    if code in _REFUSED:
        return Unreachable(f"{where} refuses our AWS credentials ({code}): fix the "
                           "credentials, or grant them access to the queue")
    if code in _NO_QUEUE:
        return Unreachable(f"{where}: queue {queue or '?'} does not exist: create it "
                           "(machinery's SQS broker never creates its queues), or fix "
                           "default_queue / the routing key")
    return None


class QueueUrls:
    """Queue name → queue URL: the prefix rule, or GetQueueUrl (cached) without a prefix."""

    def __init__(self, client: Any, location: SqsLocation) -> None:
        self.client = client
        self.location = location
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        if self.location.prefix is not None:
            return f"{self.location.prefix}/{name}"
        with self._lock:
            url = self._cache.get(name)
        if url is None:
            url = str(self.client.get_queue_url(QueueName=name)["QueueUrl"])
            with self._lock:
                self._cache[name] = url
        return url

    def ensure(self, name: str, attributes: dict[str, str]) -> str:
        """The URL of a queue of ours, created (idempotently) with ``attributes`` if missing."""
        try:
            url = self(name)
            self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return url
        except Exception as exc:
            if not is_missing_queue(exc):
                raise
        url = str(self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        if self.location.prefix is None:
            with self._lock:
                self._cache[name] = url
        return self(name) if self.location.prefix is not None else url
