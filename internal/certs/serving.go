package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// ServingCert is the webhook server's certificate, as last read from the
// Secret. The webhook server starts before the first certificate exists; until
// then a handshake fails and the replica is not ready.
type ServingCert struct {
	cert atomic.Pointer[tls.Certificate]
}

// GetCertificate is a tls.Config GetCertificate.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no webhook serving certificate yet")
}

// CacheByObject restricts the manager's cache of Secrets to the one Secret
// holding the certificate: the manager may read no other.
func CacheByObject(o Options) map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{&corev1.Secret{}: {
		Namespaces: map[string]cache.Config{o.Namespace: {}},
		Field:      fields.OneTermEqualSelector("metadata.name", o.SecretName),
	}}
}

// secretReader copies the serving certificate from the Secret to ServingCert
// and to CertDir, in every replica. No kubelet mounts the Secret: a mounted
// Secret reaches the pod up to a minute after it changes, and not at all
// outside a cluster.
type secretReader struct {
	client  client.Reader
	key     types.NamespacedName
	certDir string
	serving *ServingCert
}

func setupSecretReader(mgr ctrl.Manager, o Options, serving *ServingCert) error {
	r := &secretReader{
		client:  mgr.GetClient(),
		key:     types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName},
		certDir: o.CertDir,
		serving: serving,
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("webhook-serving-cert").
		For(&corev1.Secret{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
			return client.ObjectKeyFromObject(obj) == r.key
		}))).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(r)
}

func (r *secretReader) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var secret corev1.Secret
	if err := r.client.Get(ctx, r.key, &secret); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	certPEM, keyPEM := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		// The rotator has not written it yet: its update brings us back.
		return reconcile.Result{}, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("secret %s: tls.crt and tls.key: %w", r.key, err))
	}
	if old := r.serving.cert.Swap(&cert); old == nil || !bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		ctrl.LoggerFrom(ctx).Info("Serving the webhook certificate from the Secret", "secret", r.key)
	}
	for name, data := range map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM} {
		err := writeIfChanged(filepath.Join(r.certDir, name), data)
		if errors.Is(err, syscall.EROFS) {
			// The Secret is mounted there (as the Helm chart does): the
			// kubelet writes the files.
			return reconcile.Result{}, nil
		}
		if err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// writeIfChanged replaces path with data through a rename, so that a reader
// never sees half a file.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
