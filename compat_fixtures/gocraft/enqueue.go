package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gocraft/work"
)

// enqueueResult is one printed line: the job enqueued, or dup for a refused unique one.
type enqueueResult struct {
	ID    *string `json:"id"`
	Name  string  `json:"name"`
	Dup   bool    `json:"dup"`
	RunAt *int64  `json:"run_at,omitempty"`
}

func runEnqueue(argv []string) error {
	fs := flag.NewFlagSet("enqueue", flag.ExitOnError)
	redisURL := fs.String("redis", "redis://127.0.0.1:6379", "redis URL")
	ns := fs.String("ns", "work", "namespace")
	job := fs.String("job", "", "job name")
	argsJSON := fs.String("args", "", "args, a JSON object")
	in := fs.Int64("in", 0, "EnqueueIn: seconds from now")
	unique := fs.Bool("unique", false, "EnqueueUnique (with --in: EnqueueUniqueIn)")
	uniqueIn := fs.Int64("unique-in", 0, "EnqueueUniqueIn: seconds from now")
	count := fs.Int("count", 0, "enqueue N jobs (args get \"n\": 0..N-1) and print the rate")
	fs.Parse(argv)
	if *job == "" {
		return fmt.Errorf("enqueue: --job is required")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	scheduled, delay := set["in"] || set["unique-in"], *in
	if set["unique-in"] {
		*unique, delay = true, *uniqueIn
	}

	pool := newRedisPool(*redisURL)
	defer pool.Close()
	enq := work.NewEnqueuer(*ns, pool)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)

	one := func(args map[string]interface{}) error {
		res := enqueueResult{Name: *job}
		var j *work.Job
		var err error
		switch {
		case *unique && scheduled:
			var sj *work.ScheduledJob
			if sj, err = enq.EnqueueUniqueIn(*job, delay, args); sj != nil {
				j, res.RunAt = sj.Job, &sj.RunAt
			}
		case *unique:
			j, err = enq.EnqueueUnique(*job, args)
		case scheduled:
			var sj *work.ScheduledJob
			if sj, err = enq.EnqueueIn(*job, delay, args); sj != nil {
				j, res.RunAt = sj.Job, &sj.RunAt
			}
		default:
			j, err = enq.Enqueue(*job, args)
		}
		if err != nil {
			return err
		}
		if j == nil {
			res.Dup = true
		} else {
			res.ID = &j.ID
		}
		return enc.Encode(res)
	}

	if *count <= 0 {
		args, err := decodeArgs(*argsJSON)
		if err != nil {
			return err
		}
		return one(args)
	}
	start := time.Now()
	for n := 0; n < *count; n++ {
		args, err := decodeArgs(*argsJSON) // a fresh map: Enqueue keeps a reference
		if err != nil {
			return err
		}
		if args == nil {
			args = map[string]interface{}{}
		}
		args["n"] = int64(n)
		if err := one(args); err != nil {
			return err
		}
	}
	elapsed := time.Since(start).Seconds()
	return enc.Encode(map[string]interface{}{
		"count": *count, "seconds": elapsed, "jobs_per_second": float64(*count) / elapsed,
	})
}
