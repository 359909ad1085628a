package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime/debug"
)

const defaultQueue = "machinery_tasks" // machinery's default_queue

// generator owns one gen run: the real server (Redis broker + backend),
// a raw Redis connection to read back what machinery wrote, and the
// manifest being built.
type generator struct {
	out      string
	srv      *Server
	st       *store
	manifest Manifest
	seen     map[string]bool
}

// genAbort carries a fatal error out of the generation steps (see must).
type genAbort struct{ err error }

// must aborts the run on error; recovered in runGen. It keeps the
// fixture-building code linear instead of threading errors everywhere.
func must(err error) {
	if err != nil {
		panic(genAbort{err})
	}
}

func mustBytes(b []byte, err error) []byte { must(err); return b }

func runGen(args []string) (err error) {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	out := fs.String("out", "", "output directory")
	redisURL := fs.String("redis", "", "redis://host:port/db (the DB must be empty)")
	flush := fs.Bool("flush", false, "FLUSHDB first instead of requiring an empty DB")
	verbose := fs.Bool("v", false, "show machinery's own log output (on stderr)")
	fs.Parse(args)
	if *out == "" || *redisURL == "" {
		return fmt.Errorf("usage: gen --out DIR --redis redis://HOST:PORT/DB [--flush]")
	}
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(genAbort)
			if !ok {
				panic(r)
			}
			err = a.err
		}
	}()

	// machinery logs DEBUG/INFO to stdout (and stack traces for the
	// deliberately panicking tasks): silence it unless -v, then on stderr.
	logOut := io.Discard
	if *verbose {
		logOut = os.Stderr
	}
	setMachineryLogger(log.New(logOut, "machinery: ", 0))

	g := &generator{out: *out, seen: map[string]bool{}}
	g.manifest = Manifest{Version: machineryVersion, Machinery: moduleVersion(), Fixtures: []Fixture{}}
	g.st, err = openStore(*redisURL)
	must(err)
	defer g.st.close()
	if *flush {
		must(g.st.flush())
	} else if n, err := g.st.dbSize(); err != nil || n != 0 {
		must(fmt.Errorf("redis DB is not empty (%d keys, err=%v); use a private DB or --flush", n, err))
	}
	g.srv, err = newRedisServer(&Config{DefaultQueue: defaultQueue, ResultsExpireIn: 3600}, *redisURL)
	must(err)
	for name, fn := range resultTasks {
		must(g.srv.RegisterTask(name, fn))
	}

	must(os.MkdirAll(g.out, 0o755))
	g.genArgSignatures()
	g.genHandBuiltSignatures()
	g.genWorkflows()
	g.genTaskStates()
	g.genResults()
	g.genGroupMetas()
	must(writeManifest(filepath.Join(g.out, "manifest.json"), &g.manifest))
	fmt.Printf("wrote %d fixtures for machinery %s %s to %s\n",
		len(g.manifest.Fixtures), machineryVersion, g.manifest.Machinery, g.out)
	return nil
}

// emit writes one raw message file (exact bytes, no trailing newline) and
// its manifest entry, computed by decoding the file as a Go consumer does.
func (g *generator) emit(kind, what string, b []byte) {
	file := kind + "_" + what + ".json"
	if g.seen[file] {
		must(fmt.Errorf("duplicate fixture %s", file))
	}
	g.seen[file] = true
	must(os.WriteFile(filepath.Join(g.out, file), b, 0o644))
	a, err := analyze(kind, b)
	must(err)
	f := Fixture{File: file, Kind: kind, Args: a.args, Results: a.results}
	if !bytes.Equal(a.remarshal, b) {
		f.Remarshal = file + ".remarshal"
		must(os.WriteFile(filepath.Join(g.out, f.Remarshal), a.remarshal, 0o644))
		fmt.Fprintf(os.Stderr, "note: %s: Go's decode+re-marshal differs from the file; recorded\n", file)
	}
	g.manifest.Fixtures = append(g.manifest.Fixtures, f)
}

// moduleVersion reports the machinery module version linked into this binary.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == machineryModule {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}
