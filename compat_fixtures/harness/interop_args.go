package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// argFlags collects repeated `--arg TYPE=VALUE` flags.
type argFlags []Arg

func (a *argFlags) String() string { return fmt.Sprint(len(*a), " args") }

func (a *argFlags) Set(s string) error {
	arg, err := parseArg(s)
	if err != nil {
		return err
	}
	*a = append(*a, arg)
	return nil
}

// parseArg turns TYPE=VALUE into an Arg holding a Go value of exactly that
// type, as a Go producer would put it into tasks.Arg.Value:
//
//	bool=true  int8=-128  uint64=18446744073709551615  float32=0.1  string=any text
//	[]int64=[1,-2]  []string=["a","b"]  []float64=[0.5,1e21]  []bool=[true]
//	[]uint8=[0,255]  (a JSON array; marshalled as base64 like any []byte)
//	[]byte=00ff41    (lowercase hex, "" = empty)
//	[]T=null         (a nil slice: marshalled as null)
func parseArg(s string) (Arg, error) {
	typ, text, ok := strings.Cut(s, "=")
	if !ok {
		return Arg{}, fmt.Errorf("--arg %q: expected TYPE=VALUE", s)
	}
	t, err := argGoType(typ)
	if err != nil {
		return Arg{}, err
	}
	v, err := parseValue(typ, t, text)
	if err != nil {
		return Arg{}, fmt.Errorf("--arg %q: %v", s, err)
	}
	return Arg{Type: typ, Value: v.Interface()}, nil
}

func argGoType(typ string) (reflect.Type, error) {
	for _, t := range interopArgTypes {
		if t.typ == typ {
			return t.goType, nil
		}
	}
	return nil, fmt.Errorf("unsupported arg type %q", typ)
}

func parseValue(typ string, t reflect.Type, text string) (reflect.Value, error) {
	if t.Kind() != reflect.Slice {
		return parseScalar(t, text)
	}
	if text == "null" {
		return reflect.Zero(t), nil
	}
	if typ == "[]byte" {
		b, err := hex.DecodeString(text)
		return reflect.ValueOf(b), err
	}
	var elems []interface{}
	if err := decodeAsConsumer([]byte(text), &elems); err != nil {
		return reflect.Value{}, fmt.Errorf("expected a JSON array: %v", err)
	}
	out := reflect.MakeSlice(t, len(elems), len(elems))
	for i, el := range elems {
		var s string
		switch el := el.(type) {
		case json.Number:
			s = el.String()
		case string:
			s = el
		case bool:
			s = strconv.FormatBool(el)
		default:
			return reflect.Value{}, fmt.Errorf("element %d: unexpected %T", i, el)
		}
		if t.Elem().Kind() == reflect.String {
			if _, isStr := el.(string); !isStr {
				return reflect.Value{}, fmt.Errorf("element %d: expected a JSON string", i)
			}
		}
		v, err := parseScalar(t.Elem(), s)
		if err != nil {
			return reflect.Value{}, fmt.Errorf("element %d: %v", i, err)
		}
		out.Index(i).Set(v)
	}
	return out, nil
}

// parseScalar parses text into a value of type t (range-checked to its size).
func parseScalar(t reflect.Type, text string) (reflect.Value, error) {
	v := reflect.New(t).Elem()
	switch t.Kind() {
	case reflect.Bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return v, err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(text, 10, t.Bits())
		if err != nil {
			return v, err
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(text, 10, t.Bits())
		if err != nil {
			return v, err
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(text, t.Bits())
		if err != nil {
			return v, err
		}
		v.SetFloat(f)
	case reflect.String:
		v.SetString(text)
	default:
		return v, fmt.Errorf("no parser for %s", t)
	}
	return v, nil
}
