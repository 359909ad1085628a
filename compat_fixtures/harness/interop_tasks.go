package main

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The interop task set: what `harness worker` serves and what `harness
// produce` / `harness send` call. The Python bridge registers the same
// names with the same semantics; README.md "Interop task set" is the
// contract, keep the two in sync.

// interopArgType is one machinery arg type (a typesMap key) with the Go type
// it reflects to and the name of its echo task.
type interopArgType struct {
	typ    string       // Arg.Type as sent, e.g. "[]int64"
	goType reflect.Type // reflect type of the value; its String() is the result Type
	task   string       // echo_<suffix>
}

// interopArgTypes lists every supported arg type once (29: 14 scalars, 14
// slices and "[]byte"), in argSpecs order, derived from values.go so the
// two cannot drift apart.
var interopArgTypes = func() []interopArgType {
	var out []interopArgType
	seen := map[string]bool{}
	for _, s := range argSpecs {
		if seen[s.typ] {
			continue // string_invalid_utf8 reuses "string"
		}
		seen[s.typ] = true
		out = append(out, interopArgType{s.typ, reflect.TypeOf(s.values[0]), echoTaskName(s.typ)})
	}
	return out
}()

// echoTaskName: "[]" becomes "slice_" ("[]int8" -> "echo_slice_int8"),
// except "[]byte" -> "echo_bytes" ("[]uint8" stays "echo_slice_uint8").
func echoTaskName(typ string) string {
	if typ == "[]byte" {
		return "echo_bytes"
	}
	return "echo_" + strings.Replace(typ, "[]", "slice_", 1)
}

// interopTasks builds the task set. rdb is a pool on the result backend's
// Redis (count_call, retry_later and stamp keep their counters there).
func interopTasks(rdb *redis.Pool) map[string]interface{} {
	incr := func(key string) (int64, error) {
		conn := rdb.Get()
		defer conn.Close()
		return redis.Int64(conn.Do("INCR", key))
	}
	m := map[string]interface{}{
		"add": func(args ...int64) (int64, error) {
			var sum int64
			for _, a := range args {
				sum += a
			}
			return sum, nil
		},
		"multiply": func(args ...int64) (int64, error) {
			product := int64(1)
			for _, a := range args {
				product *= a
			}
			return product, nil
		},
		"concat": func(parts []string) (string, error) {
			return strings.Join(parts, ""), nil
		},
		"fail": func(msg string) error {
			return errors.New(msg)
		},
		"sleep_ms": func(ms int64) (int64, error) {
			time.Sleep(time.Duration(ms) * time.Millisecond)
			return ms, nil
		},
		// As a chord callback, the members' results are appended after key
		// (the callback is not Immutable); INCR counts the invocations.
		"count_call": func(key string, values ...int64) (int64, error) {
			if _, err := incr(key); err != nil {
				return 0, err
			}
			var sum int64
			for _, v := range values {
				sum += v
			}
			return sum, nil
		},
		// ErrRetryTaskLater makes Worker.Process store RETRY and re-send the
		// same signature with ETA now+1s (RetryCount untouched).
		"retry_later": func(key string) (int64, error) {
			n, err := incr(key)
			if err != nil {
				return 0, err
			}
			if n < 3 {
				return 0, NewErrRetryTaskLater("not yet", time.Second)
			}
			return n, nil
		},
		"noop": func() error { return nil },
		// record(key, ms): the fault harness's execution counter (interop_fault.go)
		"record": recordTask,
		"stamp": func(key string) (int64, error) {
			now := time.Now().UnixMilli()
			conn := rdb.Get()
			defer conn.Close()
			if _, err := conn.Do("RPUSH", key, strconv.FormatInt(now, 10)); err != nil {
				return 0, err
			}
			return now, nil
		},
	}
	for _, t := range interopArgTypes {
		m[t.task] = echoTask(t.goType, 1) // func(v T) (T, error)
	}
	return m
}
