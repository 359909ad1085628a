package main

import (
	"flag"
	"fmt"
	"os"
	"sync"
)

// runWorker: `harness worker` - a real machinery worker serving the interop
// task set until SIGINT/SIGTERM (machinery's own signal handling: the first
// signal waits for running tasks, a second one quits at once).
func runWorker(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	var f interopFlags
	f.register(fs)
	concurrency := fs.Int("concurrency", 10, "worker concurrency (machinery: < 1 means NumCPU*2)")
	tag := fs.String("tag", "interop-go-"+machineryVersion, "consumer tag")
	fs.Parse(args)
	if err := f.validate(); err != nil {
		return err
	}
	var ready sync.Once
	sayReady := func() { ready.Do(func() { fmt.Fprintln(os.Stdout, "worker ready") }) }
	// The SQS broker never calls the PreConsumeHandler either: there,
	// ready = its first ReceiveMessage (a hook on the injected client).
	f.sqsReceiveHook = sayReady
	in, err := newInterop(&f)
	if err != nil {
		return err
	}
	defer in.close()

	// Config.DefaultQueue is already the queue; a custom-queue worker makes
	// that explicit (and is what machinery's requeue of unregistered tasks
	// uses). Both name the same Redis list.
	w := in.srv.NewCustomQueueWorker(*tag, *concurrency, f.queue)

	// The Redis brokers call PreConsumeHandler right before every BLPOP,
	// so its first call means "consuming": the one moment to say ready.
	// The AMQP broker never calls it: there, ready = one more consumer on
	// the queue than before Launch.
	w.SetPreConsumeHandler(func(*Worker) bool {
		sayReady()
		return true
	})
	if isAMQP(f.broker) {
		before, err := amqpConsumers(f.broker, f.queue)
		if err != nil {
			return fmt.Errorf("amqp: %v", err)
		}
		go announceAMQPConsumer(f.broker, f.queue, before, sayReady)
	}

	// Launch returns ErrWorkerQuitGracefully after the first signal.
	if err = w.Launch(); err == ErrWorkerQuitGracefully {
		return nil
	}
	return err
}
