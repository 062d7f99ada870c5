// Command controlplane runs a local Kubernetes control plane (etcd and
// kube-apiserver from bin/k8s) for `make up`, `make demo` and benchmarks. It
// installs arbiter's CRDs and the sample target CRD, writes an admin
// kubeconfig, and runs until it receives SIGINT or SIGTERM, then stops both
// processes.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func main() {
	var (
		assets     = flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory holding kube-apiserver, etcd and kubectl.")
		crdDirs    = flag.String("crds", "config/crd/bases", "Comma-separated directories of CRDs to install.")
		kubeconfig = flag.String("write-kubeconfig", ".local/kubeconfig", "Where to write the admin kubeconfig.")
	)
	flag.Parse()
	if err := run(*assets, strings.Split(*crdDirs, ","), *kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func run(assets string, crdDirs []string, kubeconfig string) error {
	if assets == "" {
		return fmt.Errorf("--assets (or KUBEBUILDER_ASSETS) must name the directory of kube-apiserver, etcd and kubectl; run `make tools`")
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
	}
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("starting control plane: %w", err)
	}
	// Stop on a signal, and also when writing the kubeconfig fails, so no
	// etcd or kube-apiserver is left behind.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)

	werr := writeKubeconfig(kubeconfig, env.KubeConfig)
	if werr == nil {
		fmt.Printf("Control plane ready at %s; kubeconfig %s\n", env.Config.Host, kubeconfig)
		<-stop
	}
	if err := env.Stop(); err != nil {
		return fmt.Errorf("stopping control plane: %w", err)
	}
	return werr
}

func writeKubeconfig(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	// Rename so that a waiting `make up` never reads a half-written file.
	return os.Rename(tmp, path)
}
