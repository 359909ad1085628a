package main

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// decodeAsConsumer decodes raw message bytes exactly like machinery's
// brokers (consumeOne) and backends (getState / getGroupMeta) do:
// json.NewDecoder + UseNumber, so numbers inside interface{} values
// (Arg.Value, TaskResult.Value, Headers) stay json.Number literals.
func decodeAsConsumer(b []byte, into interface{}) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(into)
}

// analysis is what a Go consumer makes of one fixture file.
type analysis struct {
	decoded   interface{} // *Signature, *TaskState or *GroupMeta
	args      []ArgCheck  // signature: one per top-level Arg
	results   []ArgCheck  // task_state: one per TaskResult
	remarshal []byte      // json.Marshal of the decoded struct
}

func analyze(kind string, b []byte) (*analysis, error) {
	a := new(analysis)
	var err error
	switch kind {
	case kindSignature:
		sig := new(Signature)
		if err = decodeAsConsumer(b, sig); err != nil {
			return nil, fmt.Errorf("decode: %v", err)
		}
		a.decoded = sig
		for _, arg := range sig.Args {
			c, err := checkValue(arg.Type, arg.Value)
			if err != nil {
				return nil, err
			}
			a.args = append(a.args, c)
		}
	case kindTaskState:
		st := new(TaskState)
		if err = decodeAsConsumer(b, st); err != nil {
			return nil, fmt.Errorf("decode: %v", err)
		}
		a.decoded = st
		for i, r := range st.Results {
			if r == nil { // "Results":[null] decodes to a nil *TaskResult
				return nil, fmt.Errorf("result %d is null", i)
			}
			c, err := checkValue(r.Type, r.Value)
			if err != nil {
				return nil, err
			}
			a.results = append(a.results, c)
		}
	case kindGroupMeta:
		gm := new(GroupMeta)
		if err = decodeAsConsumer(b, gm); err != nil {
			return nil, fmt.Errorf("decode: %v", err)
		}
		a.decoded = gm
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	if a.remarshal, err = json.Marshal(a.decoded); err != nil {
		return nil, fmt.Errorf("re-marshal: %v", err)
	}
	return a, nil
}
