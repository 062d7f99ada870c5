package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func validOptions() Options {
	return Options{
		Namespace: "arbiter-system", SecretName: "arbiter-webhook-server-cert", ServiceName: "arbiter-webhook-service",
		MutatingWebhookConfiguration: "m", ValidatingWebhookConfiguration: "v", CertDir: "/tmp/x",
	}
}

func TestOptionsValidateNamesTheEmptyFlag(t *testing.T) {
	for _, tc := range []struct {
		flag  string
		clear func(*Options)
	}{
		{"POD_NAMESPACE", func(o *Options) { o.Namespace = "" }},
		{"--webhook-cert-secret", func(o *Options) { o.SecretName = "" }},
		{"--webhook-service", func(o *Options) { o.ServiceName = "" }},
		{"--mutating-webhook-configuration", func(o *Options) { o.MutatingWebhookConfiguration = "" }},
		{"--validating-webhook-configuration", func(o *Options) { o.ValidatingWebhookConfiguration = "" }},
		{"--webhook-cert-dir", func(o *Options) { o.CertDir = "" }},
	} {
		o := validOptions()
		tc.clear(&o)
		err := o.validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.flag+":") {
			t.Errorf("empty %s: got %v, want an error naming it", tc.flag, err)
		}
	}
	if err := validOptions().validate(); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestDNSNameIsTheServiceName(t *testing.T) {
	if got := validOptions().DNSName(); got != "arbiter-webhook-service.arbiter-system.svc" {
		t.Errorf("DNSName() = %q", got)
	}
}

func TestNamespaceFromPodNamespace(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "elsewhere")
	if ns, err := Namespace(); err != nil || ns != "elsewhere" {
		t.Errorf("Namespace() = %q, %v; want elsewhere", ns, err)
	}
}

// servingPair is a certificate and key for the webhook Service, signed by a
// fresh CA, as the rotator writes them.
func servingPair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	cr := &rotator.CertRotator{CAName: "arbiter-ca", CAOrganization: "arbiter", DNSName: validOptions().DNSName(),
		ExtKeyUsages: &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	now := time.Now()
	ca, err := cr.CreateCACert(now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = cr.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func TestSecretReaderServesAndWritesTheSecretsCertificate(t *testing.T) {
	dir := t.TempDir()
	key := types.NamespacedName{Namespace: "arbiter-system", Name: "arbiter-webhook-server-cert"}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	c := fake.NewClientBuilder().WithObjects(secret).Build()
	serving := &ServingCert{}
	r := &secretReader{client: c, key: key, certDir: dir, serving: serving}
	ctx := context.Background()

	// The shipped Secret is empty until the rotator fills it.
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	if _, err := serving.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Fatal("a certificate is served before the Secret holds one")
	}
	if _, err := os.Stat(filepath.Join(dir, "tls.crt")); !os.IsNotExist(err) {
		t.Fatalf("tls.crt written before the Secret holds one: %v", err)
	}

	for round := range 2 { // the second round is a rotation
		certPEM, keyPEM := servingPair(t)
		secret.Data = map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}
		if err := c.Update(ctx, secret); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		got, err := serving.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		want, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Certificate[0], want.Certificate[0]) {
			t.Errorf("round %d: the served certificate is not the Secret's", round)
		}
		for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
			if onDisk, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(onDisk, data) {
				t.Errorf("round %d: %s on disk is not the Secret's (%v)", round, name, err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("cert dir holds %d entries, want tls.crt and tls.key only (no temporary file left)", len(entries))
	}
}

func TestSecretReaderRefusesAMismatchedPair(t *testing.T) {
	key := types.NamespacedName{Namespace: "arbiter-system", Name: "arbiter-webhook-server-cert"}
	certPEM, _ := servingPair(t)
	_, otherKey := servingPair(t)
	c := fake.NewClientBuilder().WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": otherKey},
	}).Build()
	r := &secretReader{client: c, key: key, certDir: t.TempDir(), serving: &ServingCert{}}
	_, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key})
	if err == nil || !strings.Contains(err.Error(), "tls.crt and tls.key") {
		t.Errorf("mismatched pair: got %v, want an error naming tls.crt and tls.key", err)
	}
}
