// Package certs provisions the admission webhooks' serving certificate when
// the manager manages it itself (--webhook-cert-management=self): no
// cert-manager in the cluster.
//
// open-policy-agent/cert-controller's rotator keeps a CA and a serving
// certificate for <service>.<namespace>.svc in a Secret, renews them well
// before they expire and injects the CA into both webhook configurations. It
// runs in every replica, leader or not: its writes are optimistic updates, so
// whichever replica writes first wins and the others find a valid
// certificate. Every replica then serves the certificate it reads from the
// Secret (ServingCert), so each one answers admission requests whether it
// leads or not.
package certs

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// The rotator's RBAC is hand-written (config/release/webhook_cert_rbac.yaml,
// and the Helm chart's webhook-certs.yaml): only a release that manages its
// own certificate holds it, and markers cannot restrict a Secret by name.

// Management values of --webhook-cert-management.
const (
	// Self: the manager provisions, rotates and injects its own certificate.
	Self = "self"
	// External: tls.crt and tls.key are read from --webhook-cert-dir, where
	// cert-manager (or an operator) puts them.
	External = "external"
)

// Managements are the values --webhook-cert-management accepts.
var Managements = []string{Self, External}

// Options name what the rotator writes.
type Options struct {
	// Namespace is the manager's own namespace, where the Secret and the
	// webhook Service live.
	Namespace string
	// SecretName is the Secret holding the CA and the serving certificate.
	// The release ships it empty: the rotator updates it, it never creates it.
	SecretName string
	// ServiceName is the webhook Service: the certificate is valid for
	// <ServiceName>.<Namespace>.svc, the name the API server dials.
	ServiceName string
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration receive
	// the CA bundle.
	MutatingWebhookConfiguration   string
	ValidatingWebhookConfiguration string
	// CertDir is where the serving certificate is written as tls.crt and
	// tls.key, for the rotator's readiness check and anyone reading files.
	CertDir string
}

func (o Options) validate() error {
	for _, f := range []struct{ flag, value string }{
		{"POD_NAMESPACE", o.Namespace},
		{"--webhook-cert-secret", o.SecretName},
		{"--webhook-service", o.ServiceName},
		{"--mutating-webhook-configuration", o.MutatingWebhookConfiguration},
		{"--validating-webhook-configuration", o.ValidatingWebhookConfiguration},
		{"--webhook-cert-dir", o.CertDir},
	} {
		if f.value == "" {
			return fmt.Errorf("%s: must not be empty with --webhook-cert-management=%s", f.flag, Self)
		}
	}
	return nil
}

// DNSName is the name the certificate is issued for.
func (o Options) DNSName() string {
	return fmt.Sprintf("%s.%s.svc", o.ServiceName, o.Namespace)
}

// Setup adds the rotator and the Secret reader to mgr; the reader keeps
// serving (the webhook server's GetCertificate) up to date. The returned
// checker fails until this replica has the certificate and the CA is in both
// webhook configurations. The manager's cache must hold the Secret
// (CacheByObject).
func Setup(mgr manager.Manager, o Options, serving *ServingCert) (healthz.Checker, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.CertDir, 0o700); err != nil {
		return nil, fmt.Errorf("--webhook-cert-dir: %w", err)
	}
	ready := make(chan struct{})
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName},
		CertDir:        o.CertDir,
		CAName:         "arbiter-ca",
		CAOrganization: "arbiter",
		DNSName:        o.DNSName(),
		ExtraDNSNames:  []string{o.DNSName() + ".cluster.local"},
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: o.MutatingWebhookConfiguration, Type: rotator.Mutating},
			{Name: o.ValidatingWebhookConfiguration, Type: rotator.Validating},
		},
		// Every replica serves webhooks, so every replica must see a valid
		// certificate and an injected CA before it reports ready.
		RequireLeaderElection: false,
		EnableReadinessCheck:  true,
		FieldOwner:            "arbiter-cert-rotator",
	}); err != nil {
		return nil, fmt.Errorf("adding the certificate rotator: %w", err)
	}
	if err := setupSecretReader(mgr, o, serving); err != nil {
		return nil, err
	}
	checker := func(_ *http.Request) error {
		select {
		case <-ready:
			return nil
		default:
			return errors.New("the webhook serving certificate is not provisioned and injected yet")
		}
	}
	return checker, nil
}

// Namespace is the manager's own namespace: POD_NAMESPACE (the Deployment
// sets it from the downward API), else the service account's namespace file
// of a pod.
func Namespace() (string, error) {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns, nil
	}
	raw, err := os.ReadFile(serviceAccountNamespaceFile)
	if err != nil {
		return "", fmt.Errorf("POD_NAMESPACE is not set and %s is unreadable (not in a pod): %w", serviceAccountNamespaceFile, err)
	}
	return strings.TrimSpace(string(raw)), nil
}

const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// DefaultCertDir is where the serving certificate goes when --webhook-cert-dir
// is empty: controller-runtime's default, a writable emptyDir in the release.
var DefaultCertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
