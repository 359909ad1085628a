package main

import "time"

// genTaskStates: every state as the tasks.New*TaskState constructors build
// it (json.Marshal, as non-merging backends store it), and as the Redis
// backend stores it after merging TaskName/CreatedAt from the previous state.
func (g *generator) genTaskStates() {
	sig := g.newSig("add", []Arg{{Type: "int64", Value: int64(2)}, {Type: "int64", Value: int64(3)}})
	sig.UUID = fixedUUID("task", "states")
	results := g.callAdd(sig)

	// As constructed.
	g.emit(kindTaskState, "constructed_pending", marshal(NewPendingTaskState(sig)))
	g.emit(kindTaskState, "constructed_received", marshal(NewReceivedTaskState(sig)))
	g.emit(kindTaskState, "constructed_started", marshal(NewStartedTaskState(sig)))
	g.emit(kindTaskState, "constructed_retry", marshal(NewRetryTaskState(sig)))
	g.emit(kindTaskState, "constructed_success", marshal(NewSuccessTaskState(sig, results)))
	g.emit(kindTaskState, "constructed_success_nil_results", marshal(NewSuccessTaskState(sig, nil)))
	g.emit(kindTaskState, "constructed_failure", marshal(NewFailureTaskState(sig, failureText)))
	// TTL is only ever set by the DynamoDB backend (unix seconds of expiry).
	withTTL := NewSuccessTaskState(sig, results)
	withTTL.TTL = time.Now().Unix() + 3600
	g.emit(kindTaskState, "constructed_success_ttl", marshal(withTTL))

	// As the Redis backend stores them: one task walking through every state.
	b := g.srv.GetBackend()
	must(b.SetStatePending(sig))
	g.emit(kindTaskState, "redis_pending", g.state(sig.UUID))
	must(b.SetStateReceived(sig))
	g.emit(kindTaskState, "redis_received", g.state(sig.UUID))
	must(b.SetStateStarted(sig))
	g.emit(kindTaskState, "redis_started", g.state(sig.UUID))
	must(b.SetStateRetry(sig))
	g.emit(kindTaskState, "redis_retry", g.state(sig.UUID))
	must(b.SetStateSuccess(sig, results))
	g.emit(kindTaskState, "redis_success", g.state(sig.UUID))

	failed := g.newSig("states_failure", nil)
	must(b.SetStatePending(failed))
	must(b.SetStateFailure(failed, failureText))
	g.emit(kindTaskState, "redis_failure", g.state(failed.UUID))

	// No PENDING first: the merge silently finds nothing, so TaskName stays
	// "" and CreatedAt is the zero time.
	orphan := g.newSig("states_orphan", nil)
	must(b.SetStateReceived(orphan))
	g.emit(kindTaskState, "redis_received_without_pending", g.state(orphan.UUID))
}

// callAdd runs the "add" task function the way the worker does:
// tasks.NewWithSignature (ReflectArgs on the Go values) + Task.Call.
func (g *generator) callAdd(sig *Signature) []*TaskResult {
	task, err := NewWithSignature(workflowTasks["add"], sig)
	must(err)
	results, err := task.Call()
	must(err)
	return results
}
