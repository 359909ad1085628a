package main

import "math"

// argSpec is one "signature per supported arg type" fixture: every value
// becomes one positional Arg of type typ (Go values of exactly that type,
// as a Go producer would put them into tasks.Arg.Value).
type argSpec struct {
	what   string // file name part: signature_<what>.json
	typ    string // tasks.Arg.Type, one of machinery's typesMap keys
	values []interface{}
}

var negZero = math.Copysign(0, -1)

// Edge strings: HTML-escaped chars, JS line separators, non-ASCII, emoji,
// quotes, backslash, control chars (incl. \b \f which Go >= 1.22 writes
// short), DEL, a literal U+FFFD and '/' (not escaped by Go).
var edgeStrings = []interface{}{
	"",
	"plain",
	"<script>a && b</script>",
	"line\u2028sep\u2029para",
	"é ü ñ ß 日本語 Ελληνικά",
	"emoji 😀 👍🏽 🇩🇪",
	`quote " and 'single'`,
	`back\slash \\ \n literal`,
	"ctrl \x00\x01\x07\b\f\n\r\t\x1b\x1f\x7f end",
	"replacement \ufffd literal",
	"a/b</c>",
}

var argSpecs = []argSpec{
	{"bool", "bool", []interface{}{true, false}},
	{"int", "int", []interface{}{int(math.MinInt64), int(math.MaxInt64), int(0), int(-1), int(9007199254740993)}},
	{"int8", "int8", []interface{}{int8(math.MinInt8), int8(math.MaxInt8), int8(0), int8(-1)}},
	{"int16", "int16", []interface{}{int16(math.MinInt16), int16(math.MaxInt16), int16(0), int16(-1)}},
	{"int32", "int32", []interface{}{int32(math.MinInt32), int32(math.MaxInt32), int32(0), int32(-1)}},
	{"int64", "int64", []interface{}{int64(math.MinInt64), int64(math.MaxInt64), int64(0), int64(-1), int64(9007199254740993), int64(-9007199254740993)}},
	{"uint", "uint", []interface{}{uint(0), uint(math.MaxUint64), uint(9223372036854775808)}},
	{"uint8", "uint8", []interface{}{uint8(0), uint8(1), uint8(math.MaxUint8)}},
	{"uint16", "uint16", []interface{}{uint16(0), uint16(math.MaxUint16)}},
	{"uint32", "uint32", []interface{}{uint32(0), uint32(math.MaxUint32)}},
	{"uint64", "uint64", []interface{}{uint64(0), uint64(math.MaxUint64), uint64(9223372036854775808), uint64(9007199254740993)}},
	{"float32", "float32", []interface{}{
		float32(0.1), float32(1.1), float32(3), float32(-2.5), float32(16777217),
		float32(math.MaxFloat32), float32(0x1p-126) /* smallest normal */, float32(math.SmallestNonzeroFloat32), /* denormal */
		float32(1e-7), float32(1e21), float32(negZero),
	}},
	{"float64", "float64", []interface{}{
		3.0, 1e20, 1e21, 1e-6, 1e-7, 123456789.0, 5e-324, math.MaxFloat64, negZero,
		0.1, 1.1, -2.5, 9007199254740993.0, 0x1p-1022 /* smallest normal */, 1.0 / 3,
	}},
	{"string", "string", edgeStrings},
	// Go replaces invalid UTF-8 with U+FFFD and writes it as the escape
	// "\ufffd" (a valid U+FFFD is written raw) - kept in its own fixture.
	{"string_invalid_utf8", "string", []interface{}{"bad \xff\xfe byte", "cut \xe2\x82 seq", "surrogate \xed\xa0\x80 half"}},

	{"slice_bool", "[]bool", []interface{}{[]bool{true, false}, []bool{}, []bool(nil)}},
	{"slice_int", "[]int", []interface{}{[]int{math.MinInt64, math.MaxInt64, 0, -1}, []int{}, []int(nil)}},
	{"slice_int8", "[]int8", []interface{}{[]int8{math.MinInt8, math.MaxInt8, 0}, []int8{}, []int8(nil)}},
	{"slice_int16", "[]int16", []interface{}{[]int16{math.MinInt16, math.MaxInt16, 0}, []int16{}, []int16(nil)}},
	{"slice_int32", "[]int32", []interface{}{[]int32{math.MinInt32, math.MaxInt32, 0}, []int32{}, []int32(nil)}},
	{"slice_int64", "[]int64", []interface{}{[]int64{math.MinInt64, math.MaxInt64, 0, 9007199254740993}, []int64{}, []int64(nil)}},
	{"slice_uint", "[]uint", []interface{}{[]uint{0, math.MaxUint64}, []uint{}, []uint(nil)}},
	// []uint8 values are []byte to encoding/json: base64 strings, not arrays.
	{"slice_uint8", "[]uint8", []interface{}{[]uint8{0, 1, 127, 128, 255}, []uint8{0xfb, 0xff}, []uint8{}, []uint8(nil)}},
	{"slice_uint16", "[]uint16", []interface{}{[]uint16{0, math.MaxUint16}, []uint16{}, []uint16(nil)}},
	{"slice_uint32", "[]uint32", []interface{}{[]uint32{0, math.MaxUint32}, []uint32{}, []uint32(nil)}},
	{"slice_uint64", "[]uint64", []interface{}{[]uint64{0, math.MaxUint64, 9223372036854775808}, []uint64{}, []uint64(nil)}},
	{"slice_float32", "[]float32", []interface{}{
		[]float32{0.1, 1.1, 3, math.MaxFloat32, 0x1p-126, math.SmallestNonzeroFloat32, 1e-7, float32(negZero)},
		[]float32{}, []float32(nil),
	}},
	{"slice_float64", "[]float64", []interface{}{
		[]float64{3, 1e20, 1e21, 1e-6, 1e-7, 123456789, 5e-324, math.MaxFloat64, negZero, 0.1},
		[]float64{}, []float64(nil),
	}},
	{"bytes", "[]byte", []interface{}{
		[]byte{0x00, 0xff, 0xfe, '<', '>', '&'}, []byte{0x01}, []byte{0x01, 0x02}, []byte{0xfb, 0xef, 0xbe},
		[]byte("é😀"), []byte{}, []byte(nil),
	}},
	{"slice_string", "[]string", []interface{}{
		[]string{"a", "<&>", "é", "😀", "\u2028", `"\`}, []string{""}, []string{}, []string(nil),
	}},
}
