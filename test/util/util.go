// Package util holds what arbiter's integration and e2e suites share: where
// the test binaries are, and how long to wait for things.
package util

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

const (
	// Timeout bounds a wait for something that should happen promptly.
	Timeout = 30 * time.Second
	// LongTimeout bounds a wait for a process to start or a batch to finish.
	LongTimeout = 2 * time.Minute
	// Interval is how often an Eventually polls.
	Interval = 50 * time.Millisecond
)

// K8sVersion is the version of the Kubernetes binaries hack/tools builds.
const K8sVersion = "1.37.2"

// RepoRoot is the root of the arbiter checkout.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Path joins parts under the repository root.
func Path(parts ...string) string {
	return filepath.Join(append([]string{RepoRoot()}, parts...)...)
}

// AssetsDir is the directory holding kube-apiserver, etcd and kubectl:
// KUBEBUILDER_ASSETS when set (make test sets it), else bin/k8s/<version>.
// It fails when the binaries are missing, naming the command that builds them.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = Path("bin", "k8s", K8sVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make tools` (or `make test`, which builds it)", bin, dir)
		}
	}
	return dir, nil
}

// CRDDirs are the CRDs every suite installs: arbiter's own and the sample
// target kind (accounts.bank.example.com).
func CRDDirs() []string {
	return []string{Path("config", "crd", "bases"), Path("config", "samples", "crds")}
}

// WebhookManifests is the generated admission webhook configuration, which
// envtest installs pointing at a local webhook server with fresh certificates.
func WebhookManifests() []string {
	return []string{Path("config", "webhook", "manifests.yaml")}
}
