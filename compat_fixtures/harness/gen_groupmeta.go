package main

import "time"

// genGroupMetas: group metas not already captured from SendGroup /
// SendChord / TriggerChord in gen_workflows.go.
func (g *generator) genGroupMetas() {
	// InitGroup with a nil task list: "TaskUUIDs":null.
	nilGroup := fixedUUID("group", "nil_uuids")
	must(g.srv.GetBackend().InitGroup(nilGroup, nil))
	g.emit(kindGroupMeta, "init_nil_task_uuids", g.state(nilGroup))

	// No Redis code path sets Lock or TTL: the memcache backend sets
	// Lock=true while triggering a chord, DynamoDB sets TTL. Built by hand
	// and json.Marshal'ed as those backends do.
	locked := &GroupMeta{
		GroupUUID:      fixedUUID("group", "locked"),
		TaskUUIDs:      []string{fixedUUID("task", "locked_1"), fixedUUID("task", "locked_2")},
		ChordTriggered: true,
		Lock:           true,
		CreatedAt:      time.Now().UTC(),
		TTL:            time.Now().Unix() + 3600,
	}
	g.emit(kindGroupMeta, "locked_ttl", marshal(locked))
}
