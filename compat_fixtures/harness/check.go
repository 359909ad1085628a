package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// runCheck verifies fixture files written by someone else (the Python
// bridge): each must decode in Go like a broker/backend decodes it, give the
// manifest's CANON (or fail ReflectValue where the manifest says "error"),
// and re-marshal to exactly the same bytes (or, where the manifest names a
// remarshal file, to exactly those). Any manifest "version" is
// accepted, so check also runs on gen's own output.
func runCheck(args []string) (failed int, err error) {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	dir := fs.String("dir", "", "directory holding manifest.json and the fixture files")
	fs.Parse(args)
	if *dir == "" {
		return 0, fmt.Errorf("usage: check --dir DIR")
	}
	m, err := readManifest(filepath.Join(*dir, "manifest.json"))
	if err != nil {
		return 0, fmt.Errorf("manifest: %v", err)
	}
	passed := 0
	for _, f := range m.Fixtures {
		if err := checkFixture(*dir, f); err != nil {
			// keep one line per fixture
			fmt.Printf("FAIL %s: %s\n", f.File, strings.ReplaceAll(err.Error(), "\n", `\n`))
			failed++
		} else {
			fmt.Printf("ok %s\n", f.File)
			passed++
		}
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	return failed, nil
}

func checkFixture(dir string, f Fixture) error {
	b, err := os.ReadFile(filepath.Join(dir, f.File))
	if err != nil {
		return err
	}
	a, err := analyze(f.Kind, b)
	if err != nil {
		return err
	}
	switch f.Kind {
	case kindSignature:
		err = compareChecks("arg", f.Args, a.args)
	case kindTaskState:
		err = compareChecks("result", f.Results, a.results)
	}
	if err != nil {
		return err
	}
	// a Go consumer writes back exactly these bytes (see Fixture.Remarshal)
	want := b
	if f.Remarshal != "" {
		if want, err = os.ReadFile(filepath.Join(dir, f.Remarshal)); err != nil {
			return err
		}
	}
	if !bytes.Equal(a.remarshal, want) {
		return fmt.Errorf("re-marshal differs %s", firstDiff(want, a.remarshal))
	}
	return nil
}

func compareChecks(what string, want, got []ArgCheck) error {
	if len(want) != len(got) {
		return fmt.Errorf("manifest lists %d %ss, file has %d", len(want), what, len(got))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Type != g.Type {
			return fmt.Errorf("%s %d: manifest type %q, file type %q", what, i, w.Type, g.Type)
		}
		if w.Error != nil {
			if g.Error == nil {
				return fmt.Errorf("%s %d (%s): manifest expects a ReflectValue error, Go got canon %s", what, i, w.Type, g.Canon)
			}
			continue
		}
		if g.Error != nil {
			return fmt.Errorf("%s %d (%s): ReflectValue failed in Go: %s", what, i, w.Type, *g.Error)
		}
		if !sameJSON(w.Canon, g.Canon) {
			return fmt.Errorf("%s %d (%s): canon: manifest %s, Go %s", what, i, w.Type, w.Canon, g.Canon)
		}
	}
	return nil
}

func sameJSON(a, b []byte) bool {
	var x, y interface{}
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// firstDiff describes, on one line, where Go's bytes first differ from the file.
func firstDiff(file, goBytes []byte) string {
	i := 0
	for i < len(file) && i < len(goBytes) && file[i] == goBytes[i] {
		i++
	}
	from := i - 30
	if from < 0 {
		from = 0
	}
	window := func(b []byte) []byte {
		to := i + 40
		if to > len(b) {
			to = len(b)
		}
		return b[from:to]
	}
	return fmt.Sprintf("at byte %d (file %d bytes, Go %d): file %q, Go %q",
		i, len(file), len(goBytes), window(file), window(goBytes))
}
