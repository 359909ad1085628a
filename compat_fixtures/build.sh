#!/usr/bin/env bash
# Build the Go harness for both machinery versions into compat_fixtures/bin/:
#   bin/harness-v1  (github.com/RichardKnop/machinery v1, default build)
#   bin/harness-v2  (github.com/RichardKnop/machinery/v2, -tags mv2)
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p bin
go build -o bin/harness-v1 ./harness
go build -tags mv2 -o bin/harness-v2 ./harness
