// gocraft-harness drives the real github.com/gocraft/work v0.5.1 for the bridge's interop
// tests: an enqueuer (enqueue), a recording worker pool (pool) and a throughput pool
// (bench-pool). See ../README.md and tests/interop/gocraft_go.py.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/gocraft/work"
	"github.com/gomodule/redigo/redis"
)

const usage = `usage: gocraft-harness SUBCOMMAND [flags]
  enqueue     --redis URL --ns NS --job NAME [--args JSON] [--in S] [--unique] [--unique-in S] [--count N]
  pool        --redis URL --ns NS --concurrency C --record FILE --job SPEC... [--periodic "CRON=NAME"...] [--drain]
  bench-pool  --redis URL --ns NS --concurrency C --job NAME --expect N [--timeout S]
SPEC = name[:ok|fail|failuntil=K|sleep=MS|panic][,max_fails=N][,skip_dead][,max_concurrency=N][,priority=N][,backoff=S]`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "enqueue":
		err = runEnqueue(os.Args[2:])
	case "pool":
		err = runPool(os.Args[2:])
	case "bench-pool":
		err = runBenchPool(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocraft-harness:", err)
		os.Exit(1)
	}
}

// newRedisPool is a redigo pool on a redis:// URL (no cap: a worker pool needs
// concurrency + heartbeater + requeuers + reaper connections at once).
func newRedisPool(url string) *redis.Pool {
	return &redis.Pool{
		MaxIdle:     32,
		IdleTimeout: 240 * time.Second,
		Dial:        func() (redis.Conn, error) { return redis.DialURL(url) },
	}
}

// poolID reads WorkerPool's unexported workerPoolID (reflect may read, not write, it).
func poolID(wp *work.WorkerPool) string {
	f := reflect.ValueOf(wp).Elem().FieldByName("workerPoolID")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "-"
	}
	return f.String()
}

// decodeArgs parses a JSON object the way a Go producer would have typed it: integral
// numbers become int64, other numbers float64 (json.Number would keep the literal text).
func decodeArgs(text string) (map[string]interface{}, error) {
	if text == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var raw interface{}
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("--args: %w", err)
	}
	if raw == nil {
		return nil, nil
	}
	obj, ok := typed(raw).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("--args must be a JSON object, got %s", text)
	}
	return obj, nil
}

func typed(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]interface{}:
		for k, e := range x {
			x[k] = typed(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = typed(e)
		}
		return x
	}
	return v
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
