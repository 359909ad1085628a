//go:build !mv2

package main

import "fmt"

// runPeriodic: `harness periodic` exists in the v2 build only (harness-v2).
func runPeriodic(args []string) error {
	return fmt.Errorf("periodic: build with -tags mv2 (bin/harness-v2)")
}
