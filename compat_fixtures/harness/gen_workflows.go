package main

import (
	"fmt"
	"time"
)

// genWorkflows: chain / group / chord exactly as SendChain / SendGroup /
// SendChord put them on the Redis queue, the states and group metas they
// wrote, and what a Go worker publishes next (chain callback with appended
// results, chord callback, retry, OnError callback).
func (g *generator) genWorkflows() {
	for name, fn := range workflowTasks {
		must(g.srv.RegisterTask(name, fn))
	}
	g.genChain()
	g.genGroup()
	g.genChord()
	g.genDelayed()
	g.genRetry()
	g.genOnError()
}

func (g *generator) genChain() {
	s1 := g.newSig("chain_1", []Arg{{Type: "int64", Value: int64(1)}, {Type: "int64", Value: int64(2)}})
	s2 := g.newSig("chain_2", []Arg{{Type: "int64", Value: int64(10)}})
	s3 := g.newSig("chain_3", nil)
	for _, s := range []*Signature{s1, s2, s3} {
		s.Name = "add"
	}
	chain, err := NewChain(s1, s2, s3)
	must(err)
	_, err = g.srv.SendChain(chain)
	must(err)
	head := g.queued(defaultQueue)
	g.emit(kindSignature, "chain_head", head)
	g.emit(kindTaskState, "chain_head_pending", g.state(s1.UUID))

	// Worker runs the head; taskSucceeded appends its result (int64 3) to
	// chain_2's args and SendTask's it (re-marshalled from decoded values).
	err = g.consume(head)
	must(err)
	g.emit(kindTaskState, "chain_head_success", g.state(s1.UUID))
	g.emit(kindSignature, "chain_second_from_worker", g.queued(defaultQueue))
}

func (g *generator) genGroup() {
	sigs := []*Signature{
		g.newSig("group_1", []Arg{{Type: "int64", Value: int64(1)}}),
		g.newSig("group_2", []Arg{{Type: "string", Value: "two"}}),
		g.newSig("group_3", nil),
	}
	group, err := NewGroup(sigs...)
	must(err)
	g.fixGroupUUID(group.Tasks, &group.GroupUUID, "group")
	_, err = g.srv.SendGroup(group, 0)
	must(err)
	msgs := byUUID(mustMsgs(g.st.drainList(defaultQueue)), sigs)
	for i, m := range msgs {
		g.emit(kindSignature, fmt.Sprintf("group_member_%d", i+1), m)
	}
	g.emit(kindTaskState, "group_member_1_pending", g.state(sigs[0].UUID))
	g.emit(kindGroupMeta, "group_init", g.state(group.GroupUUID))
}

func (g *generator) genChord() {
	sigs := []*Signature{
		g.newSig("chord_member_1", []Arg{{Type: "int64", Value: int64(1)}, {Type: "int64", Value: int64(2)}}),
		g.newSig("chord_member_2", []Arg{{Type: "int64", Value: int64(40)}}),
	}
	for _, s := range sigs {
		s.Name = "add"
	}
	group, err := NewGroup(sigs...)
	must(err)
	g.fixGroupUUID(group.Tasks, &group.GroupUUID, "chord")
	callback, err := NewSignature("add", []Arg{{Type: "int64", Value: int64(100)}})
	must(err)
	callback.UUID = fixedUUID("chord", "callback") // NewChord keeps a preset UUID
	chord, err := NewChord(group, callback)
	must(err)
	_, err = g.srv.SendChord(chord, 0)
	must(err)
	msgs := byUUID(mustMsgs(g.st.drainList(defaultQueue)), sigs)
	for i, m := range msgs {
		g.emit(kindSignature, fmt.Sprintf("chord_member_%d", i+1), m)
	}
	g.emit(kindGroupMeta, "chord_init", g.state(group.GroupUUID))

	// Worker runs both members; the last one finds the group completed,
	// TriggerChord flips ChordTriggered and the callback is sent with all
	// member results appended.
	for _, m := range msgs {
		err := g.consume(m)
		must(err)
	}
	g.emit(kindTaskState, "chord_member_1_success", g.state(sigs[0].UUID))
	g.emit(kindGroupMeta, "chord_triggered", g.state(group.GroupUUID))
	g.emit(kindSignature, "chord_callback_from_worker", g.queued(defaultQueue))
	g.emit(kindTaskState, "chord_callback_pending", g.state(callback.UUID))
}

// fixGroupUUID replaces NewGroup's random group UUID (it offers no way to
// preset one) by a stable one, on the group and on every member.
func (g *generator) fixGroupUUID(members []*Signature, groupUUID *string, name string) {
	*groupUUID = fixedUUID("group", name)
	for _, s := range members {
		s.GroupUUID = *groupUUID
	}
}

func (g *generator) genDelayed() {
	sig := g.newSig("delayed", []Arg{{Type: "string", Value: "later"}})
	eta := time.Now().UTC().Add(time.Hour)
	sig.ETA = &eta
	_, err := g.srv.SendTask(sig)
	must(err)
	g.emit(kindSignature, "delayed_eta", g.delayed())
}

// genRetry: a failing task with RetryCount > 0. Worker.taskRetry stores
// RETRY, decrements RetryCount, bumps RetryTimeout (Fibonacci), sets
// ETA = now+timeout and re-sends via SendTask -> delayed_tasks ZSET and a
// fresh PENDING state.
func (g *generator) genRetry() {
	sig := g.newSig("retry", []Arg{{Name: "n", Type: "uint64", Value: uint64(18446744073709551615)}})
	sig.Name = "flaky"
	sig.RetryCount = 3
	sig.RetryTimeout = 2
	msg := g.send(sig)
	err := g.consume(msg)
	must(err)
	g.emit(kindSignature, "retry_from_worker", g.delayed())
	g.emit(kindTaskState, "retry_resent_pending", g.state(sig.UUID))
}

// genOnError: a failing task with an OnError callback: FAILURE state, and
// the callback re-sent with the error text prepended as a string arg.
func (g *generator) genOnError() {
	sig := g.newSig("on_error", nil)
	sig.Name = "failure"
	errback := g.newSig("on_error_callback", []Arg{{Type: "string", Value: "context"}})
	errback.Name = "handle_error"
	sig.OnError = []*Signature{errback}
	msg := g.send(sig)
	err := g.consume(msg)
	must(err)
	g.emit(kindTaskState, "on_error_failure", g.state(sig.UUID))
	g.emit(kindSignature, "on_error_callback_from_worker", g.queued(defaultQueue))
}

func mustMsgs(m [][]byte, err error) [][]byte { must(err); return m }
