//go:build mv2

// Adapter for github.com/RichardKnop/machinery/v2 (module version pinned in go.mod).
// Mirror of machinery_v1.go; keep the two files declaring the same names.
package main

import (
	"strings"

	machinery "github.com/RichardKnop/machinery/v2"
	amqpbackend "github.com/RichardKnop/machinery/v2/backends/amqp"
	dynamobackend "github.com/RichardKnop/machinery/v2/backends/dynamodb"
	backendiface "github.com/RichardKnop/machinery/v2/backends/iface"
	memcachebackend "github.com/RichardKnop/machinery/v2/backends/memcache"
	mongobackend "github.com/RichardKnop/machinery/v2/backends/mongo"
	redisbackend "github.com/RichardKnop/machinery/v2/backends/redis"
	"github.com/RichardKnop/machinery/v2/backends/result"
	amqpbroker "github.com/RichardKnop/machinery/v2/brokers/amqp"
	"github.com/RichardKnop/machinery/v2/brokers/iface"
	redisbroker "github.com/RichardKnop/machinery/v2/brokers/redis"
	sqsbroker "github.com/RichardKnop/machinery/v2/brokers/sqs"
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
// backend. v2 has no URL factories: brokers/backends are constructed by hand
// (README "V2"), so we parse the URL ourselves (redis://[:pass@]host:port/db).
func newRedisServer(cnf *Config, redisURL string) (*Server, error) {
	return newBrokerBackendServer(cnf, redisURL, redisURL)
}

// newBrokerBackendServer is newRedisServer with separate broker and backend
// URLs (interop worker / producer), each built by hand as v2 requires:
// machinery's AMQP broker / backend (cnf.AMQP must be set; they dial
// cnf.Broker / cnf.ResultBackend), its SQS broker and DynamoDB backend with
// the clients setupAWS put into cnf.SQS / cnf.DynamoDB, the memcache backend
// on the URL's servers, the MongoDB backend (dials cnf.ResultBackend).
// Otherwise cnf.Broker / cnf.ResultBackend are only informational in v2
// (the worker logs them); set them like v1 does.
func newBrokerBackendServer(cnf *Config, brokerURL, backendURL string) (*Server, error) {
	cnf.Broker = brokerURL
	cnf.ResultBackend = backendURL
	backend, err := newBackend(cnf, backendURL)
	if err != nil {
		return nil, err
	}
	var broker iface.Broker
	switch kind, _ := brokerKindOf(brokerURL); kind {
	case kindAMQP: // machinery's AMQP broker reads cnf.Broker and cnf.AMQP
		broker = amqpbroker.New(cnf)
	case kindSQS: // queue URL = cnf.Broker + "/" + queue
		if broker, err = sqsbroker.New(cnf); err != nil {
			return nil, err
		}
	default:
		bHost, bPassword, bDB, err := parseRedisURL(brokerURL)
		if err != nil {
			return nil, err
		}
		broker = redisbroker.New(cnf, bHost, "", bPassword, "", bDB)
	}
	return machinery.NewServer(cnf, broker, backend, eagerlock.New()), nil
}

func newBackend(cnf *Config, backendURL string) (backendiface.Backend, error) {
	kind, err := backendKindOf(backendURL)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindAMQP:
		return amqpbackend.New(cnf), nil
	case kindMemcache:
		return memcachebackend.New(cnf, strings.Split(strings.TrimPrefix(backendURL, "memcache://"), ",")), nil
	case kindMongoDB:
		return mongobackend.New(cnf)
	case kindDynamoDB:
		return dynamobackend.New(cnf)
	}
	rHost, rPassword, rDB, err := parseRedisURL(backendURL)
	if err != nil {
		return nil, err
	}
	return redisbackend.New(cnf, rHost, "", rPassword, "", rDB), nil
}
