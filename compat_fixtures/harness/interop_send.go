package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// batchConcurrency bounds the goroutines publishing with --batch.
const batchConcurrency = 64

// runSend: `harness send` - N copies of one task, one SendTask each (fresh
// task_<uuid4> UUIDs). Prints one UUID per line in send order, or with
// --wait one line "<uuid> <json>" per task once its result is in.
func runSend(args []string) (failed int, err error) {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	var f interopFlags
	f.register(fs)
	task := fs.String("task", "", "task name")
	var targs argFlags
	fs.Var(&targs, "arg", "TYPE=VALUE, repeatable, in order (see interop_args.go)")
	count := fs.Int("count", 1, "number of copies")
	batch := fs.Bool("batch", false, fmt.Sprintf("publish concurrently (%d goroutines)", batchConcurrency))
	wait := fs.Bool("wait", false, `wait for each result: "<uuid> {\"results\":[ARGCHECK...]}" or "<uuid> {\"error\":TEXT}"`)
	timeout := fs.Float64("timeout", 30, "seconds to wait for each result (--wait)")
	fs.StringVar(&brokerMessageGroupID, "group-id", "", "Signature.BrokerMessageGroupId of every task sent (required by an SQS .fifo queue)")
	fs.Parse(args)
	if err := f.validate(); err != nil {
		return 0, err
	}
	if *task == "" || *count < 1 {
		return 0, fmt.Errorf("--task is required and --count must be >= 1")
	}
	in, err := newInterop(&f)
	if err != nil {
		return 0, err
	}
	defer in.close()

	start := time.Now()
	ars, err := sendCopies(in.srv, *task, targs, *count, *batch, !*wait)
	if err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(os.Stderr, "sent %d in %v (%.0f/s)\n", *count, elapsed.Round(time.Millisecond), float64(*count)/elapsed.Seconds())
	if !*wait {
		return 0, nil
	}
	d := time.Duration(*timeout * float64(time.Second))
	for _, ar := range ars {
		line, ok := resultLine(ar, d)
		if !ok { // timed out
			failed++
		}
		fmt.Println(ar.Signature.UUID, line)
	}
	fmt.Fprintf(os.Stderr, "all results in after %v\n", time.Since(start).Round(time.Millisecond))
	return failed, nil
}

// sendCopies publishes count signatures (sequentially or from a bounded set
// of goroutines) and returns their AsyncResults in send order. When print
// is set each UUID is printed (in order) as soon as it is known.
func sendCopies(srv *Server, task string, args []Arg, count int, batch, print bool) ([]*AsyncResult, error) {
	ars := make([]*AsyncResult, count)
	sendOne := func(i int) error {
		ar, err := srv.SendTask(newSig(task, append([]Arg(nil), args...)...))
		if err != nil {
			return fmt.Errorf("SendTask #%d: %v", i, err)
		}
		ars[i] = ar
		return nil
	}
	if !batch {
		for i := range ars {
			if err := sendOne(i); err != nil {
				return nil, err
			}
			if print {
				fmt.Println(ars[i].Signature.UUID)
			}
		}
		return ars, nil
	}
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for g := 0; g < batchConcurrency && g < count; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := sendOne(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := 0; i < count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if print {
		var sb strings.Builder
		for _, ar := range ars {
			sb.WriteString(ar.Signature.UUID + "\n")
		}
		fmt.Print(sb.String())
	}
	return ars, nil
}

// resultLine waits with AsyncResult.GetWithTimeout and renders the outcome:
// {"results":[{"type":T,"canon":C},...]} (types from the stored state) or
// {"error":TEXT} (a FAILURE's Error text, or "Timeout reached"). ok is false
// only for a timeout: a FAILURE is an answer too.
func resultLine(ar *AsyncResult, timeout time.Duration) (line string, ok bool) {
	values, err := getSafely(ar.GetWithTimeout, timeout)
	out := map[string]interface{}{}
	if err == nil {
		types := resultTypes(ar)
		checks := []ArgCheck{}
		for i, v := range values {
			c, cerr := canonJSON(v)
			if cerr != nil {
				err = cerr
				break
			}
			checks = append(checks, ArgCheck{Type: types[i], Canon: json.RawMessage(c)})
		}
		out["results"] = checks
	}
	if err != nil {
		out = map[string]interface{}{"error": err.Error()}
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(out)
	return strings.TrimSuffix(b.String(), "\n"), err != ErrTimeoutReached
}
