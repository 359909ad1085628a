package main

import (
	"encoding/json"
	"fmt"
)

// Helpers that push signatures through machinery's real producer and
// worker code and read back the exact bytes it left in Redis.

const delayedTasksKey = "delayed_tasks" // redis broker default (no cnf.Redis.DelayedTasksKey)

// send publishes via Server.SendTask (PENDING state + broker.Publish with
// RPUSH onto the routing-key list) and returns the queued message bytes.
func (g *generator) send(sig *Signature) []byte {
	_, err := g.srv.SendTask(sig)
	must(err)
	return g.queued(sig.RoutingKey)
}

// queued drains the one message machinery put onto a queue list.
func (g *generator) queued(queue string) []byte {
	return mustBytes(drainOne(g.st.drainList, queue))
}

// delayed drains the one message machinery put into the delayed_tasks ZSET
// (Publish with an ETA in the future does ZADD instead of RPUSH).
func (g *generator) delayed() []byte {
	return mustBytes(drainOne(g.st.drainZSet, delayedTasksKey))
}

// state is the raw Redis backend value for a task UUID or group UUID.
func (g *generator) state(key string) []byte {
	return mustBytes(g.st.get(key))
}

// consume decodes a queued message the way the Redis broker's consumeOne
// does and hands it to machinery's Worker.Process (RECEIVED, ReflectArgs,
// STARTED, Task.Call, SUCCESS/FAILURE/RETRY, callbacks, chord trigger).
// Process errors are returned for the caller to judge.
func (g *generator) consume(msg []byte) error {
	sig := new(Signature)
	must(decodeAsConsumer(msg, sig))
	return g.srv.NewWorker("compat-harness", 1).Process(sig)
}

// marshal is what every broker's Publish and every backend does: plain
// json.Marshal of the struct.
func marshal(v interface{}) []byte {
	b, err := json.Marshal(v)
	must(err)
	return b
}

// byUUID orders captured group messages (published concurrently by
// SendGroup, so in random order) like the given signatures.
func byUUID(msgs [][]byte, sigs []*Signature) [][]byte {
	if len(msgs) != len(sigs) {
		must(fmt.Errorf("expected %d group messages, found %d", len(sigs), len(msgs)))
	}
	index := map[string][]byte{}
	for _, m := range msgs {
		var s Signature
		must(decodeAsConsumer(m, &s))
		index[s.UUID] = m
	}
	out := make([][]byte, len(sigs))
	for i, s := range sigs {
		if out[i] = index[s.UUID]; out[i] == nil {
			must(fmt.Errorf("group message for %s not found", s.UUID))
		}
	}
	return out
}
