package main

import (
	"fmt"
	"reflect"
	"time"
)

// genArgSignatures: one signature per supported arg type, sent through
// SendTask + the Redis broker, then consumed by a real Worker.Process with
// an echo task, whose SUCCESS state (as the Redis backend stores it) shows
// how a Go worker reflects those args and writes them back as results.
func (g *generator) genArgSignatures() {
	for _, spec := range argSpecs {
		args := make([]Arg, len(spec.values))
		for i, v := range spec.values {
			args[i] = Arg{Type: spec.typ, Value: v}
		}
		name := "echo_" + spec.what
		sig, err := NewSignature(name, args)
		must(err)
		sig.UUID = fixedUUID("task", name)
		msg := g.send(sig)
		g.emit(kindSignature, spec.what, msg)

		must(g.srv.RegisterTask(name, echoTask(reflect.TypeOf(spec.values[0]), len(args))))
		if err := g.consume(msg); err != nil {
			must(fmt.Errorf("%s: %v", name, err))
		}
		g.emit(kindTaskState, "success_"+spec.what, g.state(sig.UUID))
	}
}

// genHandBuiltSignatures: signatures built in Go and json.Marshal'ed, which
// is exactly what every broker's Publish does (no SendTask, so Headers stay
// null and RoutingKey stays as set).
func (g *generator) genHandBuiltSignatures() {
	sig := g.newSig("minimal", nil)
	g.emit(kindSignature, "minimal", marshal(sig))

	// The same minimal signature through SendTask: "Headers":{} and the
	// default queue as RoutingKey.
	sig = g.newSig("minimal_sent", nil)
	g.emit(kindSignature, "minimal_sent", g.send(sig))

	g.emit(kindSignature, "all_fields", marshal(allFieldsSignature(g)))

	for _, e := range etaCases() {
		sig = g.newSig("eta_"+e.what, []Arg{{Type: "int64", Value: int64(1)}})
		eta := e.eta
		sig.ETA = &eta
		g.emit(kindSignature, "eta_"+e.what, marshal(sig))
	}

	sig = g.newSig("headers", nil)
	sig.Headers = edgeHeaders()
	g.emit(kindSignature, "headers", marshal(sig))

	sig = g.newSig("arg_names", []Arg{
		{Name: "x", Type: "int64", Value: int64(1)},
		{Name: "<name> & \"q\" é", Type: "string", Value: "v"},
		{Name: "", Type: "bool", Value: true},
	})
	g.emit(kindSignature, "arg_names", marshal(sig))

	g.emit(kindSignature, "callbacks", marshal(callbacksSignature(g)))
}

// newSig is tasks.NewSignature with the random UUID replaced by a stable one.
func (g *generator) newSig(name string, args []Arg) *Signature {
	sig, err := NewSignature(name, args)
	must(err)
	sig.UUID = fixedUUID("task", name)
	return sig
}

func allFieldsSignature(g *generator) *Signature {
	sig := g.newSig("all_fields", []Arg{
		{Name: "a", Type: "int64", Value: int64(-7)},
		{Name: "b", Type: "string", Value: "<b>"},
		{Name: "c", Type: "[]float64", Value: []float64{0.5, 1e21}},
	})
	eta := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	sig.RoutingKey = "custom_queue"
	sig.ETA = &eta
	sig.GroupUUID = fixedUUID("group", "all_fields")
	sig.GroupTaskCount = 3
	sig.Headers = Headers{"trace": "abc"}
	sig.Priority = 255
	sig.Immutable = true
	sig.RetryCount = 5
	sig.RetryTimeout = 13
	sig.BrokerMessageGroupId = "message-group-1"
	sig.SQSReceiptHandle = "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq=="
	sig.StopTaskDeletionOnError = true
	sig.IgnoreWhenTaskNotRegistered = true
	return sig
}

type etaCase struct {
	what string
	eta  time.Time
}

// etaCases: time.Time marshals as RFC 3339 with up to 9 fraction digits,
// trailing zeros trimmed, in the value's own offset.
func etaCases() []etaCase {
	plus2 := time.FixedZone("", 2*3600)
	minus530 := time.FixedZone("", -(5*3600 + 30*60))
	return []etaCase{
		{"now_utc", time.Now().UTC()}, // real clock, usually 9 digits
		{"utc_9_digits", time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)},
		{"utc_trimmed", time.Date(2024, 5, 6, 7, 8, 9, 120000000, time.UTC)},
		{"utc_1_nano", time.Date(2024, 5, 6, 7, 8, 9, 1, time.UTC)},
		{"utc_whole_second", time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)},
		{"plus_0200", time.Date(2024, 5, 6, 7, 8, 9, 500, plus2)},
		{"minus_0530", time.Date(2024, 12, 31, 23, 59, 59, 999999999, minus530)},
		{"zero", time.Time{}},
	}
}

// edgeHeaders: Go sorts map keys on output; values keep their JSON types.
func edgeHeaders() Headers {
	return Headers{
		"zulu":          "last",
		"alpha":         "first",
		"uber-trace-id": "4bf92f3577b34da6:a3ce929d0e0e4736:0:1",
		"html":          "<a href=\"x\">&</a>",
		"seps":          "\u2028\u2029",
		"unicode":       "ünï 😀",
		"int":           42,
		"neg":           int64(-9007199254740993),
		"big":           uint64(18446744073709551615),
		"float":         0.1,
		"exp":           1e21,
		"true":          true,
		"false":         false,
		"null":          nil,
		"list":          []interface{}{1, "two", nil, false},
		"nested":        map[string]interface{}{"b": map[string]interface{}{"y": 2, "x": 1}, "a": []string{}},
		"":              "empty key",
		"Upper":         "sorted before lower-case",
	}
}

// callbacksSignature nests OnSuccess / OnError / ChordCallback two levels deep.
func callbacksSignature(g *generator) *Signature {
	sig := g.newSig("callbacks", []Arg{{Type: "int64", Value: int64(1)}})
	s1 := g.newSig("callbacks_on_success_1", []Arg{{Type: "string", Value: "s1"}})
	s2 := g.newSig("callbacks_on_success_2", nil)
	s2.Immutable = true
	s1.OnSuccess = []*Signature{g.newSig("callbacks_on_success_1_1", nil)}
	e1 := g.newSig("callbacks_on_error", []Arg{{Type: "[]string", Value: []string{"e"}}})
	e1.OnError = []*Signature{g.newSig("callbacks_on_error_1", nil)}
	cb := g.newSig("callbacks_chord", nil)
	cb.UUID = fixedUUID("chord", "callbacks")
	cb.OnSuccess = []*Signature{g.newSig("callbacks_chord_on_success", nil)}
	sig.OnSuccess = []*Signature{s1, s2}
	sig.OnError = []*Signature{e1}
	sig.ChordCallback = cb
	sig.OnError[0].Headers = Headers{}
	return sig
}
