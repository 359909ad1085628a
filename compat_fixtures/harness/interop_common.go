package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/gomodule/redigo/redis"
)

// interopFlags are shared by worker / produce / send.
type interopFlags struct {
	broker, backend, queue string
	redis                  string // Redis of the task set's counters (counterRedisURL)
	prefetch               int
	quiet                  bool
	aws                    awsFlags
	sqsReceiveHook         func() // not a flag: the worker's readiness on an SQS broker
}

func (f *interopFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.broker, "broker", "", "broker URL: redis://[:pass@]host:port/db, amqp://user:pass@host:port/vhost, sqs://HOST:PORT[/ACCOUNT] or an SQS queue URL prefix https://sqs.REGION.amazonaws.com/ACCOUNT")
	fs.StringVar(&f.backend, "backend", "", "result backend URL: redis://..., amqp://..., memcache://host:port[,host:port], mongodb://host:port[/DATABASE], dynamodb://[HOST:PORT]")
	fs.StringVar(&f.queue, "queue", defaultQueue, "queue (Config.DefaultQueue; the worker also consumes it as custom queue)")
	fs.StringVar(&f.redis, "redis", "", "Redis URL of the task set's counters and the producer's checks on them (default: the backend if redis://, else the broker if redis://)")
	fs.IntVar(&f.prefetch, "prefetch", 16, "AMQP broker: amqp.prefetch_count")
	fs.BoolVar(&f.quiet, "q", false, "discard machinery's own log output (default: on stderr)")
	f.aws.register(fs)
}

func (f *interopFlags) validate() error {
	if f.broker == "" || f.backend == "" {
		return fmt.Errorf("--broker and --backend are required")
	}
	return nil
}

// interop is one process's machinery server plus a Redis pool for the task
// set's counters (counterRedisURL) and a reader of the backend's group metas
// (nil for the AMQP backend, which keeps none).
type interop struct {
	srv       *Server
	rdb       *redis.Pool
	transport *transport
	groupMeta groupMetaReader
	closeMeta func()
}

func newInterop(f *interopFlags) (*interop, error) {
	// machinery logs to stdout by default; stdout is ours ("worker ready",
	// "ok ..." lines, UUIDs), so its log goes to stderr or nowhere.
	var logOut io.Writer = os.Stderr
	if f.quiet {
		logOut = io.Discard
	}
	setMachineryLogger(log.New(logOut, "machinery: ", log.LstdFlags|log.Lmicroseconds))

	t, err := resolveTransport(f)
	if err != nil {
		return nil, err
	}
	t.sqsReceiveHook = f.sqsReceiveHook
	counterURL, err := counterRedisURL(f, t)
	if err != nil {
		return nil, err
	}

	cnf := &Config{DefaultQueue: f.queue, ResultsExpireIn: 3600}
	if t.brokerKind == kindAMQP || t.backendKind == kindAMQP {
		// the AMQP broker, and the AMQP backend too, declare this exchange
		cnf.AMQP = amqpConfig(f.queue, f.prefetch)
	}
	if t.mongoDatabase != "" {
		cnf.MongoDB = &MongoConfig{Database: t.mongoDatabase}
	}
	ddbMeta, err := setupAWS(cnf, t, f.queue)
	if err != nil {
		return nil, err
	}
	srv, err := newBrokerBackendServer(cnf, t.brokerURL, t.backendURL)
	if err != nil {
		return nil, err
	}
	rdb := newRedisPool(counterURL)
	conn := rdb.Get()
	defer conn.Close()
	if _, err := conn.Do("PING"); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %v", counterURL, err)
	}
	var samePool *redis.Pool
	if counterURL == f.backend {
		samePool = rdb
	}
	meta, closeMeta, err := newGroupMetaReader(t, samePool, ddbMeta)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	if err := srv.RegisterTasks(interopTasks(rdb)); err != nil {
		return nil, err
	}
	return &interop{srv: srv, rdb: rdb, transport: t, groupMeta: meta, closeMeta: closeMeta}, nil
}

func (i *interop) close() {
	i.closeMeta()
	i.rdb.Close()
}

// do runs one Redis command on the counters' Redis (counterRedisURL).
func (i *interop) do(cmd string, args ...interface{}) (interface{}, error) {
	conn := i.rdb.Get()
	defer conn.Close()
	return conn.Do(cmd, args...)
}

// uniqueKey returns a fresh Redis key for one check, e.g.
// "interop:chord:9f2c4e...".
func uniqueKey(what string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "interop:" + what + ":" + hex.EncodeToString(b)
}
