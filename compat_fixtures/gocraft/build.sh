#!/usr/bin/env bash
# Build the gocraft/work v0.5.1 test programs into compat_fixtures/bin/ (gitignored):
#   bin/gocraft-harness  enqueue / pool / bench-pool on the real github.com/gocraft/work
#   bin/workwebui        gocraft/work's own web UI (github.com/gocraft/work/cmd/workwebui)
# Versions come from go.mod/go.sum here (-mod=readonly: the build never edits them).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p ../bin
go build -mod=readonly -o ../bin/gocraft-harness .
go build -mod=readonly -o ../bin/workwebui github.com/gocraft/work/cmd/workwebui
