package util

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
)

// HTTPGet returns the body of a GET of url; a status other than 200 is an
// error that keeps the body.
func HTTPGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return body.String(), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body.String(), nil
}

// Kubectl runs the kubectl binary with kubeconfig from the repository's
// root, stdin on its standard input, and returns its standard output; a
// failure carries standard error.
func Kubectl(kubectl, kubeconfig, stdin string, args ...string) (string, error) {
	cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Dir = RepoRoot()
	cmd.Stdin = strings.NewReader(stdin)
	return Output(cmd, "kubectl "+strings.Join(args, " "))
}

// Output runs cmd and returns its standard output; a failure is an error
// that names the command as what, and carries its standard error.
func Output(cmd *exec.Cmd, what string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", what, err, stderr.String())
	}
	return stdout.String(), nil
}

// SyncBuffer is a buffer a process's output goroutines write to while a
// test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
