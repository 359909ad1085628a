package main

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

// scenario is one `produce --scenario` name: it sends through the real
// machinery Server and reports one line per check.
type scenario struct {
	name string
	run  func(e *scenarioEnv)
}

// scenarios in the order `--scenario all` runs them.
var scenarios = []scenario{
	{"basic", scenarioBasic},
	{"types", scenarioTypes},
	{"chain", scenarioChain},
	{"group", scenarioGroup},
	{"chord", scenarioChord},
	{"eta", scenarioETA},
	{"fail", scenarioFail},
	{"retry", scenarioRetry},
}

// scenarioEnv is what a scenario works with.
type scenarioEnv struct {
	*interop
	scenario string
	timeout  time.Duration // bound of each single wait
	n        int           // chord size
	passed   int
	failed   int
}

// pollInterval is the sleep between two AsyncResult polls (GET of the state).
const pollInterval = 20 * time.Millisecond

// check prints "ok <scenario>/<case>" or "FAIL <scenario>/<case>: <reason>".
func (e *scenarioEnv) check(name string, err error) {
	if err == nil {
		e.passed++
		fmt.Printf("ok %s/%s\n", e.scenario, name)
		return
	}
	e.failed++
	// Always one line: reasons may quote multi-line values.
	reason := strings.ReplaceAll(err.Error(), "\n", `\n`)
	fmt.Printf("FAIL %s/%s: %s\n", e.scenario, name, reason)
}

// runProduce: `harness produce`. Returns the number of failed checks.
func runProduce(args []string) (int, error) {
	fs := flag.NewFlagSet("produce", flag.ExitOnError)
	var f interopFlags
	f.register(fs)
	which := fs.String("scenario", "", "scenario name, comma-separated names, or all")
	n := fs.Int("n", 10, "chord size")
	timeout := fs.Float64("timeout", 30, "seconds to wait for each result")
	fs.StringVar(&brokerMessageGroupID, "group-id", "", "Signature.BrokerMessageGroupId of every task sent (required by an SQS .fifo queue)")
	fs.Parse(args)
	if err := f.validate(); err != nil {
		return 0, err
	}
	selected, err := selectScenarios(*which)
	if err != nil {
		return 0, err
	}
	if *n < 1 {
		return 0, fmt.Errorf("--n must be >= 1")
	}
	in, err := newInterop(&f)
	if err != nil {
		return 0, err
	}
	defer in.close()

	e := &scenarioEnv{interop: in, timeout: time.Duration(*timeout * float64(time.Second)), n: *n}
	for _, s := range selected {
		e.scenario = s.name
		s.run(e)
	}
	fmt.Printf("%d passed, %d failed\n", e.passed, e.failed)
	return e.failed, nil
}

func selectScenarios(which string) ([]scenario, error) {
	if which == "all" {
		return scenarios, nil
	}
	var out []scenario
	for _, name := range strings.Split(which, ",") {
		found := false
		for _, s := range scenarios {
			if s.name == name {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			var names []string
			for _, s := range scenarios {
				names = append(names, s.name)
			}
			return nil, fmt.Errorf("unknown scenario %q (have: %s, all)", name, strings.Join(names, ", "))
		}
	}
	return out, nil
}
