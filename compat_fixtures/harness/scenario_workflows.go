package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/gomodule/redigo/redis"
)

// scenarioChain: add(1,2) -> multiply(10) -> add(5) = 35. None is
// Immutable, so each worker appends the previous result after the next
// task's own args: multiply(10, 3), add(5, 30).
func scenarioChain(e *scenarioEnv) {
	s1 := newSig("add", int64Args(1, 2)...)
	s2 := newSig("multiply", int64Args(10)...)
	s3 := newSig("add", int64Args(5)...)
	chain, err := NewChain(s1, s2, s3)
	if err != nil {
		e.check("send", err)
		return
	}
	car, err := e.srv.SendChain(chain)
	if err != nil {
		e.check("send", fmt.Errorf("SendChain: %v", err))
		return
	}
	// The intermediate states, through fresh AsyncResults on the same UUIDs.
	backend := e.srv.GetBackend()
	steps := func() {
		e.check("step_1", e.expectInt64(NewAsyncResult(s1, backend), 3))
		e.check("step_2", e.expectInt64(NewAsyncResult(s2, backend), 30))
	}
	// The AMQP backend hands out each stored state once (basic.get of the
	// task's queue), so whoever polls first consumes it: ChainAsyncResult
	// polls every step. There, read the steps first; ChainAsyncResult only
	// needs the last one. (Its IsAMQP() is false: machinery's AMQP backend
	// does not override it, so AsyncResult never purges those queues.)
	amqpStates := e.transport.backendKind == kindAMQP
	if amqpStates {
		steps()
	}
	results, err := getSafely(car.GetWithTimeout, e.timeout)
	e.check("result", wantInt64(results, err, 35))
	if !amqpStates {
		steps()
	}
}

// scenarioGroup: add(i, i) for i = 1..5, each = 2i.
func scenarioGroup(e *scenarioEnv) {
	var sigs []*Signature
	for i := int64(1); i <= 5; i++ {
		sigs = append(sigs, newSig("add", int64Args(i, i)...))
	}
	group, err := NewGroup(sigs...)
	if err != nil {
		e.check("send", err)
		return
	}
	ars, err := e.srv.SendGroup(group, 0)
	if err != nil {
		e.check("send", fmt.Errorf("SendGroup: %v", err))
		return
	}
	for i, ar := range ars {
		e.check(fmt.Sprintf("member_%d", i+1), e.expectInt64(ar, 2*int64(i+1)))
	}
}

// scenarioChord: add(i, 1) for i = 1..N with callback count_call(key): the
// callback gets every member's result appended (TaskUUIDs order) and must run
// exactly once, which the Redis counter key shows.
func scenarioChord(e *scenarioEnv) {
	key := uniqueKey("chord")
	var sigs []*Signature
	var want int64
	for i := int64(1); i <= int64(e.n); i++ {
		sigs = append(sigs, newSig("add", int64Args(i, 1)...))
		want += i + 1
	}
	group, err := NewGroup(sigs...)
	if err != nil {
		e.check("send", err)
		return
	}
	chord, err := NewChord(group, newSig("count_call", stringArg(key)))
	if err != nil {
		e.check("send", err)
		return
	}
	car, err := e.srv.SendChord(chord, 0)
	if err != nil {
		e.check("send", fmt.Errorf("SendChord: %v", err))
		return
	}
	results, err := getSafely(car.GetWithTimeout, e.timeout)
	if results == nil && err == nil {
		// ChordAsyncResult.GetWithTimeout swallows member and callback
		// errors and returns (nil, nil) instead.
		err = errors.New("no result: a member or the callback failed (ChordAsyncResult returns nil, nil)")
	}
	e.check("callback", wantInt64(results, err, want))
	if e.groupMeta != nil {
		e.check("group_meta", e.checkChordMeta(group.GroupUUID, sigs))
	} else {
		fmt.Printf("info %s/group_meta: none (the %s backend keeps no group meta)\n", e.scenario, e.transport.backendKind)
	}

	// Exactly once, also a little later (a duplicate trigger would come
	// from another worker's last member finishing at the same time).
	e.check("counter", e.checkCounter(key, 1))
	time.Sleep(500 * time.Millisecond)
	n, _ := redis.Int64(e.do("GET", key))
	fmt.Printf("info %s/counter=%d\n", e.scenario, n)
	e.check("counter_later", e.checkCounter(key, 1))
}

// checkChordMeta: after the callback was sent, the group meta (Redis and
// memcache: the JSON under <groupUUID>; MongoDB: the group_metas document;
// DynamoDB: the group_metas item) lists the member UUIDs in order and has
// ChordTriggered set.
func (e *scenarioEnv) checkChordMeta(groupUUID string, sigs []*Signature) error {
	meta, b, err := e.groupMeta(groupUUID)
	if err != nil {
		return fmt.Errorf("group meta: %v", err)
	}
	if !meta.ChordTriggered {
		return fmt.Errorf("ChordTriggered is false: %s", b)
	}
	if meta.GroupUUID != groupUUID || len(meta.TaskUUIDs) != len(sigs) {
		return fmt.Errorf("unexpected group meta %s", b)
	}
	for i, s := range sigs {
		if meta.TaskUUIDs[i] != s.UUID {
			return fmt.Errorf("TaskUUIDs[%d] = %q, expected %q", i, meta.TaskUUIDs[i], s.UUID)
		}
	}
	return nil
}

func (e *scenarioEnv) checkCounter(key string, want int64) error {
	n, err := redis.Int64(e.do("GET", key))
	if err != nil {
		return fmt.Errorf("GET %s: %v", key, err)
	}
	if n != want {
		return fmt.Errorf("counter %s = %d, expected %d", key, n, want)
	}
	return nil
}
