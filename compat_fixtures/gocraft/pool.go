package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gocraft/work"
	"github.com/gomodule/redigo/redis"
)

// Context is the pool's context type; the middleware marks it so a record shows it ran.
type Context struct {
	MW bool
}

// jobSpec is one parsed --job SPEC.
type jobSpec struct {
	name      string
	behaviour string // ok, fail, failuntil, sleep, panic
	param     int64  // K of failuntil, MS of sleep
	opts      work.JobOptions
}

func parseJobSpec(spec string) (jobSpec, error) {
	parts := strings.Split(spec, ",")
	js := jobSpec{behaviour: "ok"}
	name, behaviour, hasBehaviour := strings.Cut(parts[0], ":")
	js.name = name
	if js.name == "" {
		return js, fmt.Errorf("job spec %q: empty name", spec)
	}
	if hasBehaviour {
		kind, value, hasValue := strings.Cut(behaviour, "=")
		js.behaviour = kind
		switch kind {
		case "ok", "fail", "panic":
			if hasValue {
				return js, fmt.Errorf("job spec %q: %s takes no value", spec, kind)
			}
		case "failuntil", "sleep":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || !hasValue {
				return js, fmt.Errorf("job spec %q: %s needs =N", spec, kind)
			}
			js.param = n
		default:
			return js, fmt.Errorf("job spec %q: unknown behaviour %q", spec, kind)
		}
	}
	for _, opt := range parts[1:] {
		key, value, _ := strings.Cut(opt, "=")
		if key == "skip_dead" {
			js.opts.SkipDead = true
			continue
		}
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return js, fmt.Errorf("job spec %q: option %q needs =N", spec, opt)
		}
		switch key {
		case "backoff": // a fixed retry delay in seconds (JobOptions.Backoff), not Sidekiq's 16 s+
			delay := int64(n)
			js.opts.Backoff = func(*work.Job) int64 { return delay }
		case "max_fails":
			js.opts.MaxFails = uint(n)
		case "max_concurrency":
			js.opts.MaxConcurrency = uint(n)
		case "priority":
			js.opts.Priority = uint(n)
		default:
			return js, fmt.Errorf("job spec %q: unknown option %q", spec, key)
		}
	}
	return js, nil
}

// recorder appends one JSON line per handler run, one write(2) per line (O_APPEND).
type recorder struct {
	mu sync.Mutex
	f  *os.File
}

func (r *recorder) record(line map[string]interface{}) {
	data, err := json.Marshal(line)
	if err != nil {
		data, _ = json.Marshal(map[string]interface{}{"pool": "go", "error": err.Error()})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(append(data, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "gocraft-harness: record:", err)
	}
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// handler is the job function for one spec; it records the run when it ends (also on panic).
func handler(js jobSpec, rec *recorder, id string) func(*Context, *work.Job) error {
	return func(c *Context, job *work.Job) (err error) {
		start := time.Now()
		outcome := "ok"
		defer func() {
			if p := recover(); p != nil {
				outcome = "panic"
				defer panic(p) // after the record: gocraft/work turns it into the error
			} else if err != nil {
				outcome = "fail"
			}
			rec.record(map[string]interface{}{
				"pool": "go", "pool_id": id, "name": job.Name, "id": job.ID,
				"args": job.Args, "fails": job.Fails, "t": epoch(start), "end": epoch(time.Now()),
				"enqueued_at": job.EnqueuedAt, "unique": job.Unique, "mw": c.MW, "outcome": outcome,
			})
		}()
		switch js.behaviour {
		case "fail":
			return fmt.Errorf("boom %s", job.Name)
		case "failuntil":
			if job.Fails < js.param {
				return fmt.Errorf("boom %s", job.Name)
			}
		case "sleep":
			time.Sleep(time.Duration(js.param) * time.Millisecond)
		case "panic":
			panic("panic " + job.Name)
		}
		return nil
	}
}

// waitForSignal blocks until SIGTERM or SIGINT.
func waitForSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	signal.Stop(sig)
}

// awaitHeartbeat waits until the pool's first heartbeat registered it in
// <ns>:worker_pools: Start() beats from a goroutine, so "ready" would otherwise race it.
func awaitHeartbeat(pool *redis.Pool, ns, id string) error {
	key := "worker_pools" // gocraft's prefix: the namespace and one ':' unless empty
	if ns != "" {
		key = strings.TrimSuffix(ns, ":") + ":" + key
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn := pool.Get()
		member, err := redis.Bool(conn.Do("SISMEMBER", key, id))
		conn.Close()
		if err == nil && member {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool: no heartbeat of %s in %s after 30 s (last error: %v)", id, key, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runPool(argv []string) error {
	fs := flag.NewFlagSet("pool", flag.ExitOnError)
	redisURL := fs.String("redis", "redis://127.0.0.1:6379", "redis URL")
	ns := fs.String("ns", "work", "namespace")
	concurrency := fs.Uint("concurrency", 4, "workers")
	recordPath := fs.String("record", "", "append a JSON line per handler run here")
	drain := fs.Bool("drain", false, "Drain() before Stop() on SIGTERM/SIGINT")
	var specs, periodic stringList
	fs.Var(&specs, "job", "job SPEC (repeatable)")
	fs.Var(&periodic, "periodic", "\"CRONSPEC=NAME\", 6-field cron v1 spec (repeatable)")
	fs.Parse(argv)
	if len(specs) == 0 || *recordPath == "" {
		return fmt.Errorf("pool: --job and --record are required")
	}
	f, err := os.OpenFile(*recordPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	rec := &recorder{f: f}

	redisPool := newRedisPool(*redisURL)
	defer redisPool.Close()
	wp := work.NewWorkerPool(Context{}, *concurrency, *ns, redisPool)
	id := poolID(wp)
	wp.Middleware(func(c *Context, job *work.Job, next work.NextMiddlewareFunc) error {
		c.MW = true
		return next()
	})
	for _, spec := range specs {
		js, err := parseJobSpec(spec)
		if err != nil {
			return err
		}
		wp.JobWithOptions(js.name, js.opts, handler(js, rec, id))
	}
	for _, p := range periodic {
		i := strings.LastIndex(p, "=")
		if i <= 0 {
			return fmt.Errorf("pool: --periodic %q: want CRONSPEC=NAME", p)
		}
		wp.PeriodicallyEnqueue(p[:i], p[i+1:]) // panics on a bad spec, like the library
	}
	wp.Start()
	if err := awaitHeartbeat(redisPool, *ns, id); err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "pool ready %s\n", id)
	out.Flush()

	waitForSignal()
	if *drain {
		wp.Drain()
	}
	wp.Stop()
	return nil
}
