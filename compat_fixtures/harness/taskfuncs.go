package main

import (
	"errors"
	"fmt"
	"reflect"
)

// Point is a struct result; machinery records its Type as "main.Point"
// (reflect.TypeOf(val).String()), which ReflectValue does not support.
type Point struct {
	X     int64
	Y     float64
	Label string
	Tags  []string
}

// failureText is the error text of the failing task: HTML-escaped chars
// and non-ASCII end up in TaskState.Error.
const failureText = `bad <input> & "quotes" – ünïcödé ✓ 😀`

// workflowTasks run in the chain / chord / retry steps (gen_workflows.go).
var workflowTasks = map[string]interface{}{
	"add": func(args ...int64) (int64, error) {
		var sum int64
		for _, a := range args {
			sum += a
		}
		return sum, nil
	},
	"flaky": func(...uint64) error { return fmt.Errorf("temporary <glitch>") },
}

// resultTasks are real task functions registered with the server and run
// by machinery's own Worker.Process (NewWithSignature + Task.Call).
// Map key = task name = fixture name part (task_state_result_<name>.json).
var resultTasks = map[string]interface{}{
	"point": func() (Point, error) {
		return Point{X: -3, Y: 2.5, Label: "<p&q>", Tags: []string{"a", "é"}}, nil
	},
	"point_ptr": func() (*Point, error) {
		return &Point{X: 1, Y: 1e21, Label: "ptr"}, nil
	},
	"map": func() (map[string]interface{}, error) {
		return map[string]interface{}{
			"zeta": 1, "alpha": []interface{}{"x", 2.5, nil, true},
			"mid": map[string]interface{}{"b": uint64(18446744073709551615), "a": "<&>"},
		}, nil
	},
	"list": func() ([]interface{}, error) {
		return []interface{}{int64(1), "two", 3.5, true, nil, []string{"n"}, map[string]int{"k": 1}}, nil
	},
	"multi": func() (int64, string, []string, float64, bool, []byte, error) {
		return 42, "<ok> ünï", []string{"a", "b"}, 0.1, true, []byte{0, 255}, nil
	},
	"nil_slices": func() ([]string, []byte, []int64, error) {
		return nil, nil, nil, nil
	},
	// Only an error return value: Task.Call makes Results an empty,
	// non-nil slice -> "Results":[].
	"error_only": func() error { return nil },
	"failure":    func() error { return errors.New(failureText) },
	// A nil interface{} result makes reflect.TypeOf(nil).String() panic in
	// Task.Call; the recovered panic is stored as a FAILURE.
	"nil_interface": func() (interface{}, error) { return nil, nil },
	"panic":         func() (int64, error) { panic("panicked <here> ✓") },
}

// echoTask builds a task func taking n args of type t and returning them
// unchanged (n results of type t, then error). Run through Worker.Process
// on a decoded message it yields what a Go worker computes from the args
// (ReflectValue) and how it writes them back as results.
func echoTask(t reflect.Type, n int) interface{} {
	ins := make([]reflect.Type, n)
	outs := make([]reflect.Type, n+1)
	for i := 0; i < n; i++ {
		ins[i], outs[i] = t, t
	}
	outs[n] = reflect.TypeOf((*error)(nil)).Elem()
	fn := reflect.MakeFunc(reflect.FuncOf(ins, outs, false), func(args []reflect.Value) []reflect.Value {
		return append(args, reflect.Zero(outs[n]))
	})
	return fn.Interface()
}
