package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Helpers shared by the produce scenarios: building signatures and judging
// what machinery's own AsyncResult hands back.

// brokerMessageGroupID is --group-id: the BrokerMessageGroupId of every
// signature produce / send build (an SQS FIFO queue requires one).
var brokerMessageGroupID string

// newSig is tasks.NewSignature (fresh "task_<uuid4>" UUID), with
// BrokerMessageGroupId = --group-id.
func newSig(name string, args ...Arg) *Signature {
	sig, err := NewSignature(name, args)
	if err != nil {
		panic(err) // only fails when the OS cannot supply random bytes
	}
	sig.BrokerMessageGroupId = brokerMessageGroupID
	return sig
}

func int64Args(vals ...int64) []Arg {
	args := make([]Arg, len(vals))
	for i, v := range vals {
		args[i] = Arg{Type: "int64", Value: v}
	}
	return args
}

func stringArg(s string) Arg { return Arg{Type: "string", Value: s} }

// wait is AsyncResult.GetWithTimeout with the scenario's timeout: it polls
// the backend (GET <uuid>), swallowing backend errors such as a missing key,
// until the state is SUCCESS (-> ReflectTaskResults) or FAILURE (-> error
// with the state's Error text), or "Timeout reached".
func (e *scenarioEnv) wait(ar *AsyncResult) ([]reflect.Value, error) {
	return getSafely(ar.GetWithTimeout, e.timeout)
}

// getSafely calls an (Async|Chain|Chord)AsyncResult's GetWithTimeout and
// turns a panic into an error "panic: ...": machinery's ReflectTaskResults
// panics on some stored values (e.g. a BSON array or binary read back by
// the MongoDB backend where a slice is expected), and one such result must
// not end the whole run.
func getSafely(get func(timeout, sleep time.Duration) ([]reflect.Value, error), timeout time.Duration) (results []reflect.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			results, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return get(timeout, pollInterval)
}

// expectInt64 / expectString / expectNone wait for ar and judge its results.
func (e *scenarioEnv) expectInt64(ar *AsyncResult, want int64) error {
	results, err := e.wait(ar)
	return wantInt64(results, err, want)
}

func (e *scenarioEnv) expectString(ar *AsyncResult, want string) error {
	results, err := e.wait(ar)
	return wantString(results, err, want)
}

func (e *scenarioEnv) expectNone(ar *AsyncResult) error {
	results, err := e.wait(ar)
	return wantNoResults(results, err)
}

// one insists on exactly one result.
func one(results []reflect.Value, err error) (reflect.Value, error) {
	if err != nil {
		return reflect.Value{}, err
	}
	if len(results) != 1 {
		return reflect.Value{}, fmt.Errorf("expected 1 result, got %d: %s", len(results), describe(results))
	}
	return results[0], nil
}

// wantInt64 checks for exactly one int64 result equal to want.
func wantInt64(results []reflect.Value, err error, want int64) error {
	v, err := one(results, err)
	if err != nil {
		return err
	}
	if v.Kind() != reflect.Int64 || v.Int() != want {
		return fmt.Errorf("expected int64 %d, got %s", want, describe(results))
	}
	return nil
}

// wantString checks for exactly one string result equal to want.
func wantString(results []reflect.Value, err error, want string) error {
	v, err := one(results, err)
	if err != nil {
		return err
	}
	if v.Kind() != reflect.String || v.String() != want {
		return fmt.Errorf("expected string %q, got %s", want, describe(results))
	}
	return nil
}

// wantNoResults: a task returning only an error succeeds with
// "Results":[] (or null); AsyncResult then returns an empty, non-nil slice.
func wantNoResults(results []reflect.Value, err error) error {
	if err != nil {
		return err
	}
	if len(results) != 0 {
		return fmt.Errorf("expected no results, got %s", describe(results))
	}
	return nil
}

// resultTypes are the Type strings of the stored SUCCESS state's results
// (AsyncResult caches the completed state).
func resultTypes(ar *AsyncResult) []string {
	st := ar.GetState()
	types := make([]string, len(st.Results))
	for i, r := range st.Results {
		if r != nil {
			types[i] = r.Type
		}
	}
	return types
}

// canonJSON renders a reflected value as its CANON JSON (README, manifest).
func canonJSON(v reflect.Value) (string, error) {
	c, err := canonOf(v)
	if err != nil {
		return "", err
	}
	// No HTML escaping: keeps "<&>" legible in messages and send --wait.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err = enc.Encode(c)
	return strings.TrimSuffix(b.String(), "\n"), err
}

// describe renders results for failure messages.
func describe(results []reflect.Value) string {
	out := "["
	for i, v := range results {
		if i > 0 {
			out += ", "
		}
		if c, err := canonJSON(v); err == nil {
			out += v.Type().String() + " " + c
		} else {
			out += fmt.Sprintf("%s %v", v.Type(), v.Interface())
		}
	}
	return out + "]"
}
