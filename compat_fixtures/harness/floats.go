package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
)

// runFloats prints what encoding/json writes for raw float bit patterns, so
// the Python encoder's float formatting can be compared with Go's on random
// values. Input lines: "32 <hex bits>" or "64 <hex bits>"; output: one JSON
// number per line (or "error" where Go refuses, i.e. NaN and Inf).
func runFloats() error {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var bits uint64
		var width int
		if _, err := fmt.Sscanf(in.Text(), "%d %x", &width, &bits); err != nil {
			return fmt.Errorf("bad line %q: %v", in.Text(), err)
		}
		var value interface{} = math.Float64frombits(bits)
		if width == 32 {
			value = math.Float32frombits(uint32(bits))
		}
		b, err := json.Marshal(value)
		if err != nil {
			b = []byte("error")
		}
		out.Write(b)
		out.WriteByte('\n')
	}
	return in.Err()
}
