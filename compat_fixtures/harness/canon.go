package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// canonOf renders a value produced by tasks.ReflectValue in the CANON form of
// the manifest contract: ints/uints/floats as decimal strings (so no JSON
// number precision is involved), []uint8/[]byte as lowercase hex, other
// slices element-wise, bools and strings as themselves.
func canonOf(v reflect.Value) (interface{}, error) {
	switch v.Kind() {
	case reflect.Bool:
		return v.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32:
		return strconv.FormatFloat(v.Float(), 'g', -1, 32), nil
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	case reflect.String:
		return v.String(), nil
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return hex.EncodeToString(v.Bytes()), nil
		}
		out := make([]interface{}, v.Len())
		for i := range out {
			c, err := canonOf(v.Index(i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return nil, fmt.Errorf("no CANON for kind %s", v.Kind())
}

// reflectSafely is tasks.ReflectValue, except that a panic (machinery panics
// on e.g. a []int arg whose value is a JSON bool or object) becomes an error.
func reflectSafely(typ string, value interface{}) (v reflect.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return ReflectValue(typ, value)
}

// checkValue builds the ArgCheck for one Arg / TaskResult.
func checkValue(typ string, value interface{}) (ArgCheck, error) {
	v, err := reflectSafely(typ, value)
	if err != nil {
		msg := err.Error()
		return ArgCheck{Type: typ, Error: &msg}, nil
	}
	c, err := canonOf(v)
	if err != nil {
		return ArgCheck{}, err
	}
	// No HTML escaping: keeps canon strings legible in manifest.json.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return ArgCheck{}, err
	}
	return ArgCheck{Type: typ, Canon: bytes.TrimRight(buf.Bytes(), "\n")}, nil
}
