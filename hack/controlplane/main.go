// Command controlplane runs a local Kubernetes control plane (etcd and
// kube-apiserver from bin/k8s) for `make up`, `make demo` and benchmarks. It
// installs arbiter's CRDs, the sample target CRD and both webhook
// configurations of config/webhook (the mutating one stamps requestedBy, the
// validating one checks operations), pointed at bin/manager with a fresh
// certificate, writes an admin kubeconfig, and runs until it receives SIGINT
// or SIGTERM, then stops both processes.
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
		assets      = flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory holding kube-apiserver, etcd and kubectl.")
		crdDirs     = flag.String("crds", "config/crd/bases", "Comma-separated directories of CRDs to install.")
		kubeconfig  = flag.String("write-kubeconfig", ".local/kubeconfig", "Where to write the admin kubeconfig.")
		webhooks    = flag.String("webhooks", "config/webhook/manifests.yaml", "Admission webhook configurations (mutating and validating) to install, pointed at a webhook server on this machine.")
		webhookPort = flag.Int("webhook-port", 19443, "Port of the local webhook server (bin/manager --webhook-port).")
		certDir     = flag.String("webhook-cert-dir", ".local/webhook-certs", "Where to write the webhook server's certificate (bin/manager --webhook-cert-dir).")
	)
	flag.Parse()
	wh := envtest.WebhookInstallOptions{
		Paths:            []string{*webhooks},
		LocalServingHost: "127.0.0.1",
		LocalServingPort: *webhookPort,
	}
	if err := run(*assets, strings.Split(*crdDirs, ","), *kubeconfig, wh, *certDir); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func run(assets string, crdDirs []string, kubeconfig string, webhooks envtest.WebhookInstallOptions, certDir string) error {
	if assets == "" {
		return fmt.Errorf("--assets (or KUBEBUILDER_ASSETS) must name the directory of kube-apiserver, etcd and kubectl; run `make tools`")
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: webhooks,
	}
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("starting control plane: %w", err)
	}
	// Stop on a signal, and also when writing the kubeconfig fails, so no
	// etcd or kube-apiserver is left behind.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)

	// envtest writes the webhook certificate to a temporary directory of its
	// own; copy it where the manager is told to look.
	werr := copyCerts(env.WebhookInstallOptions.LocalServingCertDir, certDir)
	if werr == nil {
		werr = writeKubeconfig(kubeconfig, env.KubeConfig)
	}
	if werr == nil {
		fmt.Printf("Control plane ready at %s; kubeconfig %s\n", env.Config.Host, kubeconfig)
		<-stop
	}
	if err := env.Stop(); err != nil {
		return fmt.Errorf("stopping control plane: %w", err)
	}
	return werr
}

func copyCerts(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return fmt.Errorf("writing webhook certificate: %w", err)
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		data, err := os.ReadFile(filepath.Join(from, name))
		if err == nil {
			err = os.WriteFile(filepath.Join(to, name), data, 0o600)
		}
		if err != nil {
			return fmt.Errorf("writing webhook certificate: %w", err)
		}
	}
	return nil
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
