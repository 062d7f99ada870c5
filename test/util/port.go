package util

import (
	"cmp"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// handedOut are the ports ServingPort gave this process: a server that is
// down leaves its port free, and it must not go to another server.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// ServingPort is a free port for a server that a suite restarts on the same
// port, as it restarts a killed manager on its webhook port. The port lies
// outside the kernel's ephemeral range, where outgoing connections and
// listeners on port 0 take their ports from, and is never handed out twice:
// while the server is down, nothing else can take its port and fail its
// restart with "address already in use".
func ServingPort() (int, error) {
	low, high := ephemeralRange()
	// The room below the range, else above it.
	from, to := 1024, low-1
	if to-from < 1000 {
		from, to = high+1, 65535
	}
	if to < from {
		return 0, errors.New("the ephemeral port range leaves no port outside it")
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		port := from + rand.IntN(to-from+1)
		if handedOut.ports[port] {
			continue
		}
		// Every interface, as the manager's webhook server binds it.
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, errors.New("no free port outside the ephemeral range after 100 tries")
}

// ephemeralRange is Linux's ip_local_port_range, or its default where it
// cannot be read.
func ephemeralRange() (low, high int) {
	low, high = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return low, high
	}
	l, errL := strconv.Atoi(f[0])
	h, errH := strconv.Atoi(f[1])
	if errL != nil || errH != nil || l > h {
		return low, high
	}
	return l, h
}

// ServeWebhooksOnServingPort gives webhooks a ServingPort, unless they have
// a port already: the suites restart the manager on it. envtest fills the
// host only when it picks the port itself, so the host comes with it.
func ServeWebhooksOnServingPort(webhooks *envtest.WebhookInstallOptions) error {
	if webhooks.LocalServingPort != 0 {
		return nil
	}
	port, err := ServingPort()
	if err != nil {
		return err
	}
	webhooks.LocalServingPort = port
	webhooks.LocalServingHost = cmp.Or(webhooks.LocalServingHost, "127.0.0.1")
	return nil
}

// ServingAddr is host with a ServingPort: for a manager's probe, metrics or
// webhook server, which binds it only once its process has started.
func ServingAddr(host string) (string, error) {
	port, err := ServingPort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}
