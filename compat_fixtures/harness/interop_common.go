package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/gomodule/redigo/redis"
)

// interopFlags are shared by worker / produce / send.
type interopFlags struct {
	broker, backend, queue string
	prefetch               int
	quiet                  bool
}

func (f *interopFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.broker, "broker", "", "broker URL, redis://[:pass@]host:port/db or amqp://user:pass@host:port/vhost")
	fs.StringVar(&f.backend, "backend", "", "result backend URL, redis://[:pass@]host:port/db")
	fs.StringVar(&f.queue, "queue", defaultQueue, "queue (Config.DefaultQueue; the worker also consumes it as custom queue)")
	fs.IntVar(&f.prefetch, "prefetch", 16, "AMQP broker: amqp.prefetch_count")
	fs.BoolVar(&f.quiet, "q", false, "discard machinery's own log output (default: on stderr)")
}

func (f *interopFlags) validate() error {
	if f.broker == "" || f.backend == "" {
		return fmt.Errorf("--broker and --backend are required")
	}
	return nil
}

// interop is one process's machinery server plus a Redis pool on the result
// backend's Redis (for the task set's counters and the producer's checks).
type interop struct {
	srv *Server
	rdb *redis.Pool
}

func newInterop(f *interopFlags) (*interop, error) {
	// machinery logs to stdout by default; stdout is ours ("worker ready",
	// "ok ..." lines, UUIDs), so its log goes to stderr or nowhere.
	var logOut io.Writer = os.Stderr
	if f.quiet {
		logOut = io.Discard
	}
	setMachineryLogger(log.New(logOut, "machinery: ", log.LstdFlags|log.Lmicroseconds))

	cnf := &Config{DefaultQueue: f.queue, ResultsExpireIn: 3600}
	if isAMQP(f.broker) {
		cnf.AMQP = amqpConfig(f.queue, f.prefetch)
	}
	srv, err := newBrokerBackendServer(cnf, f.broker, f.backend)
	if err != nil {
		return nil, err
	}
	backendURL := f.backend
	rdb := &redis.Pool{
		MaxIdle:     16,
		IdleTimeout: time.Minute,
		Dial:        func() (redis.Conn, error) { return redis.DialURL(backendURL) },
	}
	conn := rdb.Get()
	defer conn.Close()
	if _, err := conn.Do("PING"); err != nil {
		return nil, fmt.Errorf("backend redis: %v", err)
	}
	if err := srv.RegisterTasks(interopTasks(rdb)); err != nil {
		return nil, err
	}
	return &interop{srv: srv, rdb: rdb}, nil
}

func (i *interop) close() { i.rdb.Close() }

// do runs one Redis command on the backend's Redis.
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
