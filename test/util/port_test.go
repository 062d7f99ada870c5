package util

import (
	"net"
	"strconv"
	"testing"
)

// A serving port is one no outgoing connection can be given: outside the
// ephemeral range, and free when handed out.
func TestServingPortIsFreeAndOutsideTheEphemeralRange(t *testing.T) {
	low, high := ephemeralRange()
	for range 20 {
		port, err := ServingPort()
		if err != nil {
			t.Fatal(err)
		}
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
