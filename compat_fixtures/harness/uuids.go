package main

import (
	"crypto/sha1"
	"fmt"
)

// fixedUUID returns "<prefix>_<uuid>" where the uuid is derived from name,
// formatted like machinery's google/uuid v4 values (version nibble 4, RFC
// 4122 variant), so regenerated fixtures keep their UUIDs and file bytes as
// stable as the real timestamps allow.
func fixedUUID(prefix, name string) string {
	h := sha1.Sum([]byte(prefix + "/" + name))
	b := h[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%s_%x-%x-%x-%x-%x", prefix, b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
