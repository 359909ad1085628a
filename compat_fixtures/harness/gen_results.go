package main

// genResults: SUCCESS / FAILURE states written by a real Worker.Process
// for task functions returning non-scalar results (see taskfuncs.go).
func (g *generator) genResults() {
	for _, name := range sortedKeys(resultTasks) {
		sig := g.newSig(name, nil)
		sig.UUID = fixedUUID("task", "result_"+name)
		// Process errors only report backend trouble; task failures are
		// stored as FAILURE states, which is what we want to capture.
		err := g.consume(g.send(sig))
		must(err)
		g.emit(kindTaskState, "result_"+name, g.state(sig.UUID))
	}
}
