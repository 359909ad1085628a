package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// scenarioTypes: echo_<suffix>(v) for every edge value of every supported
// arg type (values.go). All tasks are sent first, then each is awaited.
// Case names: types/<argSpec.what>/<index> (what = the echo suffix, plus
// string_invalid_utf8, sent to echo_string).
func scenarioTypes(e *scenarioEnv) {
	type sent struct {
		name, typ string
		value     interface{}
		ar        *AsyncResult
	}
	var all []sent
	for _, spec := range argSpecs {
		task := echoTaskName(spec.typ)
		for i, v := range spec.values {
			name := fmt.Sprintf("%s/%d", spec.what, i)
			ar, err := e.srv.SendTask(newSig(task, Arg{Type: spec.typ, Value: v}))
			if err != nil {
				e.check(name, fmt.Errorf("SendTask: %v", err))
				continue
			}
			all = append(all, sent{name, spec.typ, v, ar})
		}
	}
	// All tasks are out at once, so they share one --timeout budget
	// (otherwise a missing worker would cost len(all) timeouts).
	deadline := time.Now().Add(e.timeout)
	for _, s := range all {
		budget := time.Until(deadline)
		if budget < pollInterval {
			budget = pollInterval
		}
		e.check(s.name, checkEcho(s.typ, s.value, s.ar, budget))
	}
}

// checkEcho: the result, reflected by AsyncResult, must be what a Go
// consumer reflects from the argument it was sent (same Go type, equal
// CANON), and the stored result Type must be Go's reflect name of the value
// ("[]byte" args come back as "[]uint8").
func checkEcho(typ string, value interface{}, ar *AsyncResult, timeout time.Duration) error {
	want, err := consumerView(typ, value)
	if err != nil {
		return fmt.Errorf("expected value: %v", err)
	}
	got, err := one(getSafely(ar.GetWithTimeout, timeout))
	if err != nil {
		return err
	}
	if got.Type() != want.Type() {
		return fmt.Errorf("result reflects to %s, expected %s", got.Type(), want.Type())
	}
	gotC, err := canonJSON(got)
	if err != nil {
		return err
	}
	wantC, err := canonJSON(want)
	if err != nil {
		return err
	}
	if gotC != wantC {
		return fmt.Errorf("result %s, expected %s", gotC, wantC)
	}
	wantType := reflect.TypeOf(value).String()
	if types := resultTypes(ar); len(types) != 1 || types[0] != wantType {
		return fmt.Errorf("result Type %q, expected [%q]", types, wantType)
	}
	return nil
}

// consumerView is the argument as the worker's ReflectValue sees it: the
// value through json.Marshal and the consumer's UseNumber decode. It equals
// the sent value except that Go coerces invalid UTF-8 (one U+FFFD per bad
// byte) and a nil slice arrives as an empty one.
func consumerView(typ string, value interface{}) (reflect.Value, error) {
	b, err := json.Marshal(value)
	if err != nil {
		return reflect.Value{}, err
	}
	var decoded interface{}
	if err := decodeAsConsumer(b, &decoded); err != nil {
		return reflect.Value{}, err
	}
	return reflectSafely(typ, decoded)
}
