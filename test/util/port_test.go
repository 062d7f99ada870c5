package util

import (
	"net"
	"strconv"
	"testing"
)

// A serving port is one nothing else can be given while its server is
// down: outside the ephemeral range, free when handed out, and handed out
// once.
func TestServingPortIsFreeOnceAndOutsideTheEphemeralRange(t *testing.T) {
	low, high := ephemeralRange()
	seen := map[int]bool{}
	for range 200 {
		port, err := ServingPort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		if port >= low && port <= high {
			t.Fatalf("port %d is inside the ephemeral range %d-%d", port, low, high)
		}
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		_ = l.Close()
	}
}
