// Command harness is the Go side of the machinery-bridge compatibility
// tests. Built once per machinery major version:
//
//	go build -o bin/harness-v1 ./harness            # machinery v1
//	go build -tags mv2 -o bin/harness-v2 ./harness  # machinery/v2
//
// Subcommands:
//
//	gen   --out DIR --redis redis://HOST:PORT/DB   write golden files + manifest.json
//	check --dir DIR                                verify files written by Python
//	floats                                         json.Marshal of float bit patterns (stdin)
//	worker  --broker URL --backend URL ...         real worker serving the interop task set
//	produce --broker URL --backend URL --scenario  send workflows, check with AsyncResult
//	send    --broker URL --backend URL --task ...  send N copies of one task, print UUIDs
//	periodic --broker URL --name N --spec S --task T  RegisterPeriodicTask until SIGTERM (v2)
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "gen":
		if err := runGen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(2)
		}
	case "check":
		failed, err := runCheck(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "check:", err)
			os.Exit(1)
		}
		if failed > 0 {
			os.Exit(1)
		}
	case "floats":
		if err := runFloats(); err != nil {
			fmt.Fprintln(os.Stderr, "floats:", err)
			os.Exit(1)
		}
	case "worker":
		if err := runWorker(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(2)
		}
	case "produce", "send":
		run := runProduce
		if os.Args[1] == "send" {
			run = runSend
		}
		failed, err := run(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
			os.Exit(2)
		}
		if failed > 0 {
			os.Exit(1)
		}
	case "periodic":
		if err := runPeriodic(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "periodic:", err)
			os.Exit(2)
		}
	case "version":
		fmt.Println(machineryVersion, moduleVersion())
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: harness gen --out DIR --redis URL | check --dir DIR | floats | version\n"+
		"       harness worker|produce|send --broker URL --backend URL ... (-h for flags)")
	os.Exit(2)
}
