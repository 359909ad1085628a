package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// Fixture kinds (the file name prefix and the manifest "kind").
const (
	kindSignature = "signature"
	kindTaskState = "task_state"
	kindGroupMeta = "group_meta"
)

// Manifest is the contract with the Python tests (see README.md).
type Manifest struct {
	Version   string    `json:"version"`   // "v1", "v2" (gen) or "python" (check input)
	Machinery string    `json:"machinery"` // module version, e.g. "v1.10.8"
	Fixtures  []Fixture `json:"fixtures"`
}

// Fixture describes one raw message file. Args is only used for signatures
// (one ArgCheck per top-level Arg), Results only for task states (one per
// TaskResult; omitted when the state has none or null).
//
// Remarshal names a second file holding what a Go consumer writes back after
// decoding File (json.Marshal of the decoded struct), present only when that
// differs from File. It does for Go's own output in two cases: struct results
// (decoded into a map, so re-marshalled with sorted keys) and invalid UTF-8
// (written as the escape \ufffd, written back as a raw U+FFFD).
type Fixture struct {
	File      string     `json:"file"`
	Kind      string     `json:"kind"`
	Args      []ArgCheck `json:"args,omitempty"`
	Results   []ArgCheck `json:"results,omitempty"`
	Remarshal string     `json:"remarshal,omitempty"`
}

// ArgCheck is what a Go consumer gets from tasks.ReflectValue(Type, Value):
// either the CANON of the reflected value or the error text.
type ArgCheck struct {
	Type  string          `json:"type"`
	Canon json.RawMessage `json:"canon,omitempty"`
	Error *string         `json:"error,omitempty"`
}

func readManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := new(Manifest)
	if err := json.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

// writeManifest writes one fixture per line (readable, diff-friendly),
// without HTML escaping so canon strings stay legible.
func writeManifest(path string, m *Manifest) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	v, _ := json.Marshal(m.Version)
	mv, _ := json.Marshal(m.Machinery)
	fmt.Fprintf(&buf, "{\"version\": %s, \"machinery\": %s, \"fixtures\": [\n", v, mv)
	for i, f := range m.Fixtures {
		buf.WriteString("  ")
		if err := enc.Encode(f); err != nil { // Encode appends '\n'
			return err
		}
		if i < len(m.Fixtures)-1 {
			buf.Truncate(buf.Len() - 1)
			buf.WriteString(",\n")
		}
	}
	buf.WriteString("]}\n")
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
