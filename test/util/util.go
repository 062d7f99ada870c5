// Package util holds what arbiter's integration and e2e suites share: where
// the test binaries are, and how long to wait for things.
package util

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
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
	_, file, _, _ := goruntime.Caller(0)
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

// WebhookManifests is the generated admission webhook configuration, the
// mutating webhook that stamps spec.requestedBy and the validating one, which
// envtest installs pointing at a local webhook server with fresh certificates.
func WebhookManifests() []string {
	return []string{Path("config", "webhook", "manifests.yaml")}
}

// InstallAdmission creates the admission policies of config/admission (the
// one that stamps spec.requestedBy as defence in depth, besides the manager's
// mutating webhook), as `make up` and `make deploy` do.
// A new policy takes about a second to act: callers wait for it with
// RequestedByStamped.
func InstallAdmission(ctx context.Context, c client.Client) error {
	raw, err := os.ReadFile(Path("config", "admission", "requested_by.yaml"))
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("creating %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

// RequestedByStamped reports whether spec.requestedBy is stamped yet (by the
// manager's mutating webhook or the admission policy), with a server-side dry
// run of a probe operation.
func RequestedByStamped(ctx context.Context, c client.Client) (bool, error) {
	op := &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: "default"},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "probe", Targets: []arbiterv1alpha1.Target{{
			APIVersion: "v1", Kind: "ConfigMap", Name: "probe", MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"data":{}}`)},
		}}},
	}
	if err := c.Create(ctx, op, client.DryRunAll); err != nil {
		return false, err
	}
	return op.Spec.RequestedBy != nil, nil
}

// NewEnvironment is a control plane from bin/k8s (not started) that
// installs arbiter's CRDs, the sample target CRD and the given webhooks, with
// a scheme that knows Kubernetes' types and arbiter's.
func NewEnvironment(webhooks envtest.WebhookInstallOptions) (*envtest.Environment, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := ServeWebhooksOnServingPort(&webhooks); err != nil {
		return nil, err
	}
	return &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     CRDDirs(),
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		WebhookInstallOptions: webhooks,
	}, nil
}

// WatchOperations watches the operations of namespace ns from now on, and
// resumes where it left off when the API server closes the watch (as it
// does to a watcher that falls behind on a busy machine): a test that counts
// events must not lose any.
func WatchOperations(ctx context.Context, c client.WithWatch, ns string) (watch.Interface, error) {
	return watchOperations(ctx, c, ns, "")
}

// WatchFinishedOperations is WatchOperations for operations in a terminal
// phase only: each is seen once it finishes, and again when it is deleted.
// The API server filters the rest (status.phase is a selectable field), so
// a benchmark's observer decodes one event per operation rather than one
// per write.
func WatchFinishedOperations(ctx context.Context, c client.WithWatch, ns string) (watch.Interface, error) {
	var unfinished []string
	for _, p := range []arbiterv1alpha1.OperationPhase{"", arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued, arbiterv1alpha1.PhaseExecuting} {
		unfinished = append(unfinished, "status.phase!="+string(p))
	}
	return watchOperations(ctx, c, ns, strings.Join(unfinished, ","))
}

func watchOperations(ctx context.Context, c client.WithWatch, ns, fieldSelector string) (watch.Interface, error) {
	var list arbiterv1alpha1.ConflictResolutionOperationList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.Limit(1)); err != nil {
		return nil, err
	}
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		opts.FieldSelector = fieldSelector
		return c.Watch(ctx, &arbiterv1alpha1.ConflictResolutionOperationList{}, client.InNamespace(ns), &client.ListOptions{Raw: &opts})
	}}
	return watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, lw)
}

// Grant binds user, in namespace ns, to a Role allowing verbs on resource of
// group, and nothing else. Both are named user-resource-verbs, so that a
// test can revoke the grant by deleting the RoleBinding.
func Grant(ctx context.Context, c client.Client, ns, user, group, resource string, verbs ...string) error {
	name := user + "-" + resource + "-" + strings.Join(verbs, "-")
	if err := c.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: []string{resource}, Verbs: verbs}},
	}); err != nil {
		return err
	}
	return c.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})
}
