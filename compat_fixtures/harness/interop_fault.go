package main

import (
	"os"
	"time"
)

// faultRunsEnv names the file `record` appends to (bench/faults.py sets it;
// unset: the task only sleeps). The same contract as the Python fault app,
// tests/faults/fault_app.py, so a fault harness counts executions of Go,
// Python and Celery workers the same way, outside the broker under test.
const faultRunsEnv = "BRIDGE_FAULT_RUNS"

// recordTask sleeps ms milliseconds, then appends key+"\n" to the file named
// by $BRIDGE_FAULT_RUNS in one O_APPEND write; returns key.
func recordTask(key string, ms int64) (string, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	path := os.Getenv(faultRunsEnv)
	if path == "" {
		return key, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	if _, err := f.Write([]byte(key + "\n")); err != nil {
		f.Close()
		return "", err
	}
	return key, f.Close()
}
