"""DynamoDB result backend: the cost of one state write, ours vs Go machinery v1's and v2's
own backends, one moto endpoint, same run.

Each contender writes the states of N tasks in machinery's order, one task after the other:
PENDING (PutItem), STARTED (UpdateItem), SUCCESS with one int64 result (UpdateItem); each
write is timed on its own. Go's side is a small program built here against the machinery
modules the harness pins (``compat_fixtures/go.mod``) calling ``SetStatePending``,
``SetStateStarted`` and ``SetStateSuccess`` of ``backends/dynamodb`` (aws-sdk-go v1 for v1,
aws-sdk-go-v2 for v2). Rounds alternate the contenders.

The endpoint's share: the same three requests, signed once by botocore, replayed byte for
byte over one kept-alive HTTP connection (no SDK, no item building): what the endpoint
itself takes per write, plus the least any client spends on HTTP. moto runs in Python on the
same machine, so it also competes with the writers for the CPU.

Run (after `bash .ci/setup`): ``python -m bench.dynamodb_bench --writes 2000 --rounds 3``
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.state_writes import (
    OPS,
    Times,
    build_go_program,
    go_state_writer,
    go_writes,
    print_table,
    python_writes,
    run_rounds,
)
from bridge.backends.dynamodb import DynamoDBBackend
from bridge.config import Config


def captured_requests(backend: DynamoDBBackend) -> list[tuple[str, dict[str, str], bytes]]:
    """The three writes of one task as botocore sends them (method, headers, body)."""
    sent: list[tuple[str, dict[str, str], bytes]] = []

    def keep(request: Any, **_: Any) -> None:
        body = request.body if isinstance(request.body, bytes) else request.body.encode()
        sent.append((request.method, dict(request.headers), body))

    backend.client.meta.events.register("before-send.dynamodb", keep)
    python_writes(backend, 1)
    backend.client.meta.events.unregister("before-send.dynamodb", keep)
    return sent


def endpoint_floor(endpoint: str, requests: list[tuple[str, dict[str, str], bytes]],
                   n: int) -> Times:
    """Seconds each replayed request took on one kept-alive connection."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    times: Times = {op: [] for op in OPS}
    for _ in range(n):
        for op, (method, headers, body) in zip(OPS, requests, strict=True):
            t0 = time.perf_counter()
            conn.request(method, "/", body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            times[op].append(time.perf_counter() - t0)
            assert reply.status == 200, reply.status
    conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=2000, help="tasks per contender and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint", help="a DynamoDB endpoint (default: a private moto)")
    args = parser.parse_args()
    from tests.backend_servers import start_moto

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        moto = None if args.endpoint else start_moto(work)
        endpoint = args.endpoint or (moto.endpoint if moto else "")
        try:
            if moto is not None:
                os.environ.update({k: v for k, v in moto.env().items()
                                   if k != "AWS_ENDPOINT_URL"})
            binary = build_go_program(work, "ddbbench", GO_SOURCE)
            backend = DynamoDBBackend("dynamodb://" + endpoint.split("://", 1)[1], Config())
            backend.create_tables()
            tables = (backend.task_states_table, backend.group_metas_table)
            requests = captured_requests(backend)
            on_tables = ["-endpoint", endpoint, "-tasks", tables[0], "-groups", tables[1]]
            samples = run_rounds(args.rounds, {
                "endpoint (replayed HTTP)": lambda: endpoint_floor(endpoint, requests,
                                                                   args.writes),
                "bridge (boto3)": lambda: python_writes(backend, args.writes),
                "Go machinery v2": lambda: go_writes(binary, "v2", args.writes, on_tables),
                "Go machinery v1": lambda: go_writes(binary, "v1", args.writes, on_tables),
            })
            backend.close()
        finally:
            if moto is not None:
                moto.stop()
    print_table(f"{args.writes} tasks x {args.rounds} round(s) per contender on {endpoint} "
                f"({'moto' if moto else 'given endpoint'})", samples, "endpoint (replayed HTTP)")


GO_SOURCE = go_state_writer(
    imports="""
	"context"

	v1ddb "github.com/RichardKnop/machinery/v1/backends/dynamodb"
	v1config "github.com/RichardKnop/machinery/v1/config"
	v2ddb "github.com/RichardKnop/machinery/v2/backends/dynamodb"
	v2config "github.com/RichardKnop/machinery/v2/config"
	awsv2 "github.com/aws/aws-sdk-go-v2/aws"
	dynamov2 "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsv1 "github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	dynamov1 "github.com/aws/aws-sdk-go/service/dynamodb"
""",
    flags="""
	endpoint := flag.String("endpoint", "", "DynamoDB endpoint URL")
	tasks := flag.String("tasks", "task_states", "task states table")
	groups := flag.String("groups", "group_metas", "group metas table")
""",
    construct="""
	key, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if *version == "v1" {
		static := credentials.NewStaticCredentials(key, secret, "")
		sess := session.Must(session.NewSession(awsv1.NewConfig().WithRegion("us-east-1").
			WithEndpoint(*endpoint).WithCredentials(static)))
		cnf := &v1config.Config{ResultsExpireIn: 3600, DynamoDB: &v1config.DynamoDBConfig{
			Client: dynamov1.New(sess), TaskStatesTable: *tasks, GroupMetasTable: *groups}}
		s = v1{v1ddb.New(cnf)}
	} else {
		creds := awsv2.Credentials{AccessKeyID: key, SecretAccessKey: secret}
		static := func(context.Context) (awsv2.Credentials, error) { return creds, nil }
		client := dynamov2.New(dynamov2.Options{Region: "us-east-1", BaseEndpoint: endpoint,
			Credentials: awsv2.CredentialsProviderFunc(static)})
		cnf := &v2config.Config{ResultsExpireIn: 3600, DynamoDB: &v2config.DynamoDBConfig{
			Client: client, TaskStatesTable: *tasks, GroupMetasTable: *groups}}
		s = v2{must(v2ddb.New(cnf))}
	}
""")


if __name__ == "__main__":
    sys.exit(main())
