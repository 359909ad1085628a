//go:build !mv2

// Adapter for github.com/RichardKnop/machinery/v1 (module version pinned in go.mod).
// Everything version-specific lives here and in machinery_v2.go; all other
// files only use the aliases and function variables declared below.
package main

import (
	"os"
	"strings"

	machinery "github.com/RichardKnop/machinery/v1"
	"github.com/RichardKnop/machinery/v1/backends/result"
	"github.com/RichardKnop/machinery/v1/config"
	mlog "github.com/RichardKnop/machinery/v1/log"
	"github.com/RichardKnop/machinery/v1/tasks"
)

const (
	machineryVersion = "v1"
	machineryModule  = "github.com/RichardKnop/machinery"
)

type (
	Signature   = tasks.Signature
	Arg         = tasks.Arg
	Headers     = tasks.Headers
	TaskState   = tasks.TaskState
	TaskResult  = tasks.TaskResult
	GroupMeta   = tasks.GroupMeta
	Server      = machinery.Server
	Config      = config.Config
	AMQPConfig  = config.AMQPConfig
	MongoConfig = config.MongoDBConfig
	Worker      = machinery.Worker
	AsyncResult = result.AsyncResult
)

var (
	NewSignature            = tasks.NewSignature
	NewChain                = tasks.NewChain
	NewGroup                = tasks.NewGroup
	NewChord                = tasks.NewChord
	NewWithSignature        = tasks.NewWithSignature
	ReflectValue            = tasks.ReflectValue
	NewPendingTaskState     = tasks.NewPendingTaskState
	NewReceivedTaskState    = tasks.NewReceivedTaskState
	NewStartedTaskState     = tasks.NewStartedTaskState
	NewRetryTaskState       = tasks.NewRetryTaskState
	NewSuccessTaskState     = tasks.NewSuccessTaskState
	NewFailureTaskState     = tasks.NewFailureTaskState
	setMachineryLogger      = mlog.Set
	NewAsyncResult          = result.NewAsyncResult
	NewErrRetryTaskLater    = tasks.NewErrRetryTaskLater
	ErrTimeoutReached       = result.ErrTimeoutReached
	ErrWorkerQuitGracefully = machinery.ErrWorkerQuitGracefully
)

// newRedisServer builds a server with the REAL redigo Redis broker and
// backend. v1 is normally wired through its URL factories (NewServer(cnf)
// -> BrokerFactory/BackendFactory/ParseRedisURL), so that is what we use.
func newRedisServer(cnf *Config, redisURL string) (*Server, error) {
	return newBrokerBackendServer(cnf, redisURL, redisURL)
}

// newBrokerBackendServer is newRedisServer with separate broker and backend
// URLs (interop worker / producer), all through the same factories: an
// amqp:// broker or backend needs cnf.AMQP; an SQS broker (an http(s)://
// queue URL prefix) and a DynamoDB backend (https://dynamodb...) use the
// clients setupAWS put into cnf.SQS / cnf.DynamoDB; memcache:// and
// mongodb:// backends are built from the URL. NOTE: v1's NewServer ignores
// backend factory errors (the backend is then nil and SendTask fails with
// "Result backend required"), so a bad --backend URL only shows up there.
func newBrokerBackendServer(cnf *Config, brokerURL, backendURL string) (*Server, error) {
	cnf.Broker = brokerURL
	cnf.ResultBackend = backendURL
	if kind, _ := brokerKindOf(brokerURL); kind == kindSQS && !strings.HasPrefix(brokerURL, "https://sqs") {
		// v1's BrokerFactory takes an SQS URL other than https://sqs...
		// (a local SQS such as moto) only with this variable set.
		os.Setenv("DISABLE_STRICT_SQS_CHECK", "1")
	}
	return machinery.NewServer(cnf)
}
