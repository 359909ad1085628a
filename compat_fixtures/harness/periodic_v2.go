//go:build mv2

package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	machinery "github.com/RichardKnop/machinery/v2"
	redisbroker "github.com/RichardKnop/machinery/v2/brokers/redis"
	redislock "github.com/RichardKnop/machinery/v2/locks/redis"
)

// runPeriodic: `harness periodic` - a machinery v2 server whose scheduler runs
// RegisterPeriodicTask(spec, name, task with --arg args) behind machinery's
// Redis lock (locks/redis, key machinery_lock_<basename(argv0)><name><spec>)
// until SIGTERM. Prints "periodic ready" once registered. Redis broker only.
func runPeriodic(args []string) error {
	fs := flag.NewFlagSet("periodic", flag.ExitOnError)
	broker := fs.String("broker", "", "broker URL (redis://[:pass@]host:port/db)")
	backend := fs.String("backend", "", "result backend URL (default: the broker)")
	lockURL := fs.String("lock", "", "Redis URL of the periodic-task lock (default: the broker)")
	retries := fs.Int("lock-retries", 3, "locks/redis retries (v1's LockFactory uses 3)")
	queue := fs.String("queue", defaultQueue, "Config.DefaultQueue (the task's queue)")
	name := fs.String("name", "", "periodic task name (part of the lock key)")
	spec := fs.String("spec", "", "cron spec (robfig ParseStandard: 5 fields, @every 1s...)")
	task := fs.String("task", "", "task name")
	quiet := fs.Bool("q", false, "discard machinery's own log output")
	var targs argFlags
	fs.Var(&targs, "arg", "TYPE=VALUE, repeatable, in order (see interop_args.go)")
	fs.Parse(args)
	if *broker == "" || *name == "" || *spec == "" || *task == "" {
		return fmt.Errorf("--broker, --name, --spec and --task are required")
	}
	if *backend == "" {
		*backend = *broker
	}
	if *lockURL == "" {
		*lockURL = *broker
	}
	var logOut io.Writer = os.Stderr
	if *quiet {
		logOut = io.Discard
	}
	setMachineryLogger(log.New(logOut, "machinery: ", log.LstdFlags|log.Lmicroseconds))

	cnf := &Config{DefaultQueue: *queue, ResultsExpireIn: 3600, Broker: *broker, ResultBackend: *backend}
	be, err := newBackend(cnf, *backend)
	if err != nil {
		return err
	}
	bHost, bPassword, bDB, err := parseRedisURL(*broker)
	if err != nil {
		return err
	}
	lHost, lPassword, lDB, err := parseRedisURL(*lockURL)
	if err != nil {
		return err
	}
	if lPassword != "" {
		lHost = lPassword + "@" + lHost
	}
	lock := redislock.New(cnf, []string{lHost}, lDB, *retries)
	srv := machinery.NewServer(cnf, redisbroker.New(cnf, bHost, "", bPassword, "", bDB), be, lock)
	sig := &Signature{Name: *task, Args: append([]Arg(nil), targs...), RoutingKey: *queue}
	if err := srv.RegisterPeriodicTask(*spec, *name, sig); err != nil {
		return err
	}
	fmt.Println("periodic ready")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	return nil
}
