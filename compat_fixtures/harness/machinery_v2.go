//go:build mv2

// Adapter for github.com/RichardKnop/machinery/v2 (module version pinned in go.mod).
// Mirror of machinery_v1.go; keep the two files declaring the same names.
package main

import (
	machinery "github.com/RichardKnop/machinery/v2"
	redisbackend "github.com/RichardKnop/machinery/v2/backends/redis"
	"github.com/RichardKnop/machinery/v2/backends/result"
	amqpbroker "github.com/RichardKnop/machinery/v2/brokers/amqp"
	"github.com/RichardKnop/machinery/v2/brokers/iface"
	redisbroker "github.com/RichardKnop/machinery/v2/brokers/redis"
	"github.com/RichardKnop/machinery/v2/config"
	eagerlock "github.com/RichardKnop/machinery/v2/locks/eager"
	mlog "github.com/RichardKnop/machinery/v2/log"
	"github.com/RichardKnop/machinery/v2/tasks"
)

const (
	machineryVersion = "v2"
	machineryModule  = "github.com/RichardKnop/machinery/v2"
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
// backend. v2 has no URL factories: brokers/backends are constructed by hand
// (README "V2"), so we parse the URL ourselves (redis://[:pass@]host:port/db).
func newRedisServer(cnf *Config, redisURL string) (*Server, error) {
	return newBrokerBackendServer(cnf, redisURL, redisURL)
}

// newBrokerBackendServer is newRedisServer with separate broker and backend
// URLs (interop worker / producer); an amqp:// broker URL gets machinery's
// AMQP broker (cnf.AMQP must be set), which dials cnf.Broker. Otherwise
// cnf.Broker / cnf.ResultBackend are only informational in v2 (the worker
// logs them); set them like v1 does.
func newBrokerBackendServer(cnf *Config, brokerURL, backendURL string) (*Server, error) {
	rHost, rPassword, rDB, err := parseRedisURL(backendURL)
	if err != nil {
		return nil, err
	}
	cnf.Broker = brokerURL
	cnf.ResultBackend = backendURL
	var broker iface.Broker
	if isAMQP(brokerURL) { // machinery's AMQP broker reads cnf.Broker and cnf.AMQP
		broker = amqpbroker.New(cnf)
	} else {
		bHost, bPassword, bDB, err := parseRedisURL(brokerURL)
		if err != nil {
			return nil, err
		}
		broker = redisbroker.New(cnf, bHost, "", bPassword, "", bDB)
	}
	backend := redisbackend.New(cnf, rHost, "", rPassword, "", rDB)
	return machinery.NewServer(cnf, broker, backend, eagerlock.New()), nil
}
