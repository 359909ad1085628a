package main

import (
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// scenarioBasic: one call of each plain task (variadic, empty, []string).
func scenarioBasic(e *scenarioEnv) {
	key := uniqueKey("basic")
	send := func(name string, sig *Signature) *AsyncResult {
		ar, err := e.srv.SendTask(sig)
		if err != nil {
			e.check(name, fmt.Errorf("SendTask: %v", err))
			return nil
		}
		return ar
	}
	if ar := send("add", newSig("add", int64Args(1, 2, 3)...)); ar != nil {
		e.check("add", e.expectInt64(ar, 6))
	}
	if ar := send("add_no_args", newSig("add")); ar != nil {
		e.check("add_no_args", e.expectInt64(ar, 0))
	}
	if ar := send("multiply", newSig("multiply", int64Args(2, -3, 7)...)); ar != nil {
		e.check("multiply", e.expectInt64(ar, -42))
	}
	if ar := send("multiply_no_args", newSig("multiply")); ar != nil {
		e.check("multiply_no_args", e.expectInt64(ar, 1))
	}
	parts := Arg{Type: "[]string", Value: []string{"a", "<&>", "", "é😀"}}
	if ar := send("concat", newSig("concat", parts)); ar != nil {
		e.check("concat", e.expectString(ar, "a<&>é😀"))
	}
	if ar := send("sleep_ms", newSig("sleep_ms", int64Args(50)...)); ar != nil {
		e.check("sleep_ms", e.expectInt64(ar, 50))
	}
	if ar := send("noop", newSig("noop")); ar != nil {
		e.check("noop", e.expectNone(ar))
	}
	if ar := send("count_call", newSig("count_call", append([]Arg{stringArg(key)}, int64Args(4, 5)...)...)); ar != nil {
		err := e.expectInt64(ar, 9)
		if err == nil {
			err = e.checkCounter(key, 1)
		}
		e.check("count_call", err)
	}
}

// scenarioETA: stamp(key) with ETA now+2s. The Redis broker ZADDs it to
// delayed_tasks; it must not run before the ETA (50 ms clock slack).
func scenarioETA(e *scenarioEnv) {
	key := uniqueKey("eta")
	eta := time.Now().UTC().Add(2 * time.Second)
	sig := newSig("stamp", stringArg(key))
	sig.ETA = &eta
	ar, err := e.srv.SendTask(sig)
	if err != nil {
		e.check("result", fmt.Errorf("SendTask: %v", err))
		return
	}
	v, err := one(e.wait(ar))
	if err == nil && v.Kind() != reflect.Int64 {
		err = fmt.Errorf("expected an int64 result, got %s", v.Type())
	}
	e.check("result", err)
	if err != nil {
		return
	}
	stamped := v.Int()
	if min := eta.UnixMilli() - 50; stamped < min {
		e.check("not_before_eta", fmt.Errorf("ran at %d ms, %d ms before the ETA", stamped, eta.UnixMilli()-stamped))
	} else {
		e.check("not_before_eta", nil)
	}
	stamps, err := redis.Strings(e.do("LRANGE", key, 0, -1))
	if err == nil && (len(stamps) != 1 || stamps[0] != strconv.FormatInt(stamped, 10)) {
		err = fmt.Errorf("LRANGE %s = %q, expected [\"%d\"] (ran once)", key, stamps, stamped)
	}
	e.check("ran_once", err)
}

// scenarioFail: fail(msg) with an OnError callback echo_string (no args of
// its own): the worker stores FAILURE with Error = msg and sends the
// callback with the error text prepended as a "string" arg.
func scenarioFail(e *scenarioEnv) {
	const msg = "boom <&> é"
	errback := newSig("echo_string")
	sig := newSig("fail", stringArg(msg))
	sig.OnError = []*Signature{errback}
	ar, err := e.srv.SendTask(sig)
	if err != nil {
		e.check("error_text", fmt.Errorf("SendTask: %v", err))
		return
	}
	results, err := e.wait(ar)
	switch {
	case err == nil:
		err = fmt.Errorf("expected an error, got results %s", describe(results))
	case err.Error() != msg:
		err = fmt.Errorf("error text %q, expected %q", err.Error(), msg)
	case !ar.GetState().IsFailure():
		err = fmt.Errorf("state %q, expected FAILURE", ar.GetState().State)
	default:
		err = nil
	}
	e.check("error_text", err)
	// The callback's state only appears once the worker sends it; until
	// then AsyncResult polls a missing key (GET errors are swallowed).
	e.check("on_error_callback", e.expectString(NewAsyncResult(errback, e.srv.GetBackend()), msg))
}

// scenarioRetry: retry_later(key) returns ErrRetryTaskLater twice (RETRY
// state, re-sent with ETA now+1s), then the count 3.
func scenarioRetry(e *scenarioEnv) {
	key := uniqueKey("retry")
	ar, err := e.srv.SendTask(newSig("retry_later", stringArg(key)))
	if err != nil {
		e.check("result", fmt.Errorf("SendTask: %v", err))
		return
	}
	e.check("result", e.expectInt64(ar, 3))
	e.check("counter", e.checkCounter(key, 3))
}
