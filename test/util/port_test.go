package util

import (
	"net"
	"strconv"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
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

// Webhooks given a serving port get the host with it, which envtest fills
// only when it picks the port itself; a port chosen already is kept.
func TestServeWebhooksOnServingPort(t *testing.T) {
	var picked envtest.WebhookInstallOptions
	if err := ServeWebhooksOnServingPort(&picked); err != nil {
		t.Fatal(err)
	}
	if low, high := ephemeralRange(); picked.LocalServingPort >= low && picked.LocalServingPort <= high || picked.LocalServingHost != "127.0.0.1" {
		t.Errorf("webhooks serve on %s:%d, want 127.0.0.1 and a port outside %d-%d", picked.LocalServingHost, picked.LocalServingPort, low, high)
	}
	chosen := envtest.WebhookInstallOptions{LocalServingHost: "10.0.0.1", LocalServingPort: 19443}
	if err := ServeWebhooksOnServingPort(&chosen); err != nil {
		t.Fatal(err)
	}
	if chosen.LocalServingHost != "10.0.0.1" || chosen.LocalServingPort != 19443 {
		t.Errorf("a chosen address became %s:%d", chosen.LocalServingHost, chosen.LocalServingPort)
	}
}
