package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gocraft/work"
)

// runBenchPool runs a no-op handler until --expect jobs ran, then prints the rate
// between the first job's start and the last job's end.
func runBenchPool(argv []string) error {
	fs := flag.NewFlagSet("bench-pool", flag.ExitOnError)
	redisURL := fs.String("redis", "redis://127.0.0.1:6379", "redis URL")
	ns := fs.String("ns", "work", "namespace")
	concurrency := fs.Uint("concurrency", 4, "workers")
	job := fs.String("job", "", "job name")
	expect := fs.Int("expect", 0, "exit after this many jobs")
	timeout := fs.Float64("timeout", 600, "give up (exit 1) after this many seconds")
	fs.Parse(argv)
	if *job == "" || *expect <= 0 {
		return fmt.Errorf("bench-pool: --job and --expect N > 0 are required")
	}

	var mu sync.Mutex
	var ran int
	var first, last time.Time
	done := make(chan struct{})
	redisPool := newRedisPool(*redisURL)
	defer redisPool.Close()
	wp := work.NewWorkerPool(Context{}, *concurrency, *ns, redisPool)
	wp.Job(*job, func(j *work.Job) error {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if ran == 0 {
			first = now
		}
		ran++
		last = time.Now()
		if ran == *expect {
			close(done)
		}
		return nil
	})
	wp.Start()
	fmt.Printf("pool ready %s\n", poolID(wp))
	os.Stdout.Sync()

	var err error
	select {
	case <-done:
	case <-time.After(time.Duration(*timeout * float64(time.Second))):
		err = fmt.Errorf("bench-pool: timed out")
	}
	wp.Stop()
	mu.Lock()
	defer mu.Unlock()
	elapsed := last.Sub(first).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(ran) / elapsed
	}
	line, _ := json.Marshal(map[string]interface{}{
		"jobs": ran, "seconds": elapsed, "jobs_per_second": rate,
	})
	fmt.Println(string(line))
	return err
}
