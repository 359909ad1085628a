//go:build tools

// Package main pins the web UI's dependencies in go.mod/go.sum, so that
// `go build github.com/gocraft/work/cmd/workwebui` works with -mod=readonly.
package main

import _ "github.com/gocraft/work/cmd/workwebui"
