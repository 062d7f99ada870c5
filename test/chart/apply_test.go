package chart

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/arbiter-dev/arbiter/test/util"
)

// applyCombinations are the renderings applied to the API server: the
// defaults, and the kinds an admin opts in with the requester policy on.
// cert-manager and Prometheus Operator objects are left out: their kinds are
// not served without those operators.
var applyCombinations = []string{"defaults", "targetKinds", "requesterPolicy"}

// TestChartAppliesServerSide applies what `helm template` renders to a real
// kube-apiserver (envtest, nothing pre-installed) with the real
// `kubectl apply --server-side`, and checks that the API server stored every
// object: the CRDs it serves, RBAC it accepts, the Deployment, Services,
// webhook configurations and the admission policy; and that the applied RBAC
// gives the manager's ServiceAccount what it needs and no more.
func TestChartAppliesServerSide(t *testing.T) {
	assets, err := util.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(stdin string, args ...string) (string, error) {
		return util.Kubectl(filepath.Join(assets, "kubectl"), kubeconfig, stdin, args...)
	}
	if _, err := kubectl("", "create", "namespace", namespace); err != nil {
		t.Fatal(err)
	}

	for _, name := range applyCombinations {
		t.Run(name, func(t *testing.T) {
			manifest, err := renderRaw(t, valueCombinations[name]...)
			if err != nil {
				t.Fatal(err)
			}
			// helm's field manager, as `helm install --server-side` would use;
			// a second apply of the same objects must be a no-op, not a conflict.
			for range 2 {
				if out, err := kubectl(manifest, "apply", "--server-side", "--field-manager=helm", "-f", "-"); err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
			}
			objects, err := decodeObjects([]byte(manifest))
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, cfg, objects)
			canI := func(as string, check accessCheck) {
				out, _ := kubectl("", append([]string{"auth", "can-i", "--as", as}, check.args...)...)
				if got := strings.TrimSpace(out) == "yes"; got != check.allowed {
					t.Errorf("%s can %s: %v, want %v", as, strings.Join(check.args, " "), got, check.allowed)
				}
			}
			for _, check := range accessChecks[name] {
				canI(managerUser, check)
			}
			if name == "defaults" {
				// A platform team bound to the cluster policy editor role.
				if out, err := kubectl("", "create", "clusterrolebinding", "platform-cleanup",
					"--clusterrole=arbiter-clustercleanuppolicy-editor-role", "--user="+platformUser); err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				for _, c := range platformChecks {
					canI(c.as, c.accessCheck)
				}
			}
		})
	}
}

// managerUser is the manager's ServiceAccount in a release named arbiter.
const managerUser = "system:serviceaccount:" + namespace + ":arbiter-controller-manager"

// platformUser is bound to the ClusterCleanupPolicy editor role by the test.
const platformUser = "platform-team"

// accessCheck is a `kubectl auth can-i` question about the manager's
// ServiceAccount and the answer the applied RBAC must give.
type accessCheck struct {
	args    []string
	allowed bool
}

// platformChecks are asked of the defaults, by user: the ClusterCleanupPolicy
// editor role grants cluster policies and nothing namespaced.
var platformChecks = []struct {
	as string
	accessCheck
}{
	{platformUser, accessCheck{[]string{"create", "clustercleanuppolicies.arbiter.dev"}, true}},
	{platformUser, accessCheck{[]string{"update", "clustercleanuppolicies.arbiter.dev"}, true}},
	{platformUser, accessCheck{[]string{"create", "cleanuppolicies.arbiter.dev", "-n", "bank"}, false}},
	{"someone-else", accessCheck{[]string{"create", "clustercleanuppolicies.arbiter.dev"}, false}},
}

// accessChecks are asked after each rendering is applied: the bindings reach
// the ServiceAccount, the certificate rights stop at arbiter's own Secret and
// webhook configurations, and target kinds are granted only once listed.
var accessChecks = map[string][]accessCheck{
	"defaults": {
		{[]string{"update", "conflictresolutionoperations.arbiter.dev", "--subresource=status", "-n", "bank"}, true},
		{[]string{"delete", "conflictresolutionoperations.arbiter.dev", "-n", "bank"}, true},
		{[]string{"create", "conflictresolutionoperations.arbiter.dev", "-n", "bank"}, false},
		{[]string{"watch", "cleanuppolicies.arbiter.dev", "-A"}, true},
		{[]string{"create", "leases.coordination.k8s.io", "-n", namespace}, true},
		{[]string{"create", "leases.coordination.k8s.io", "-n", "bank"}, false},
		{[]string{"update", "secrets/arbiter-webhook-server-cert", "-n", namespace}, true},
		{[]string{"get", "secrets/another-secret", "-n", namespace}, false},
		{[]string{"get", "secrets", "-n", "bank"}, false},
		{[]string{"create", "secrets", "-n", namespace}, false},
		{[]string{"patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/arbiter-mutating-webhook-configuration"}, true},
		{[]string{"patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/arbiter-validating-webhook-configuration"}, true},
		{[]string{"patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/someone-elses"}, false},
		{[]string{"update", "configmaps", "-n", "bank"}, false},
	},
	"targetKinds": {
		{[]string{"update", "configmaps", "-n", "bank"}, true},
		{[]string{"get", "configmaps", "-n", "bank"}, true},
		{[]string{"delete", "configmaps", "-n", "bank"}, false},
		{[]string{"update", "secrets", "-n", "bank"}, false},
	},
}

// assertStored checks that every object is in the API server as rendered
// (its labels at least: the server may add defaults) and that each CRD is
// established, so its kinds are served.
func assertStored(t *testing.T, cfg *rest.Config, objects []*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), util.Timeout)
	defer cancel()
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := map[string]string{
		"CustomResourceDefinition":       "customresourcedefinitions",
		"ServiceAccount":                 "serviceaccounts",
		"Secret":                         "secrets",
		"Service":                        "services",
		"Deployment":                     "deployments",
		"PodDisruptionBudget":            "poddisruptionbudgets",
		"ClusterRole":                    "clusterroles",
		"ClusterRoleBinding":             "clusterrolebindings",
		"Role":                           "roles",
		"RoleBinding":                    "rolebindings",
		"MutatingWebhookConfiguration":   "mutatingwebhookconfigurations",
		"ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
		"MutatingAdmissionPolicy":        "mutatingadmissionpolicies",
		"MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
	}
	for _, o := range objects {
		resource, ok := mapper[o.GetKind()]
		if !ok {
			t.Errorf("%s %s: a kind this test does not know; add it", o.GetKind(), o.GetName())
			continue
		}
		gv, err := schema.ParseGroupVersion(o.GetAPIVersion())
		if err != nil {
			t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = client.Resource(gv.WithResource(resource))
		if o.GetNamespace() != "" {
			ri = client.Resource(gv.WithResource(resource)).Namespace(o.GetNamespace())
		}
		stored, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s not stored: %v", o.GetKind(), o.GetName(), err)
			continue
		}
		for k, v := range o.GetLabels() {
			if stored.GetLabels()[k] != v {
				t.Errorf("%s %s: stored label %s=%q, rendered %q", o.GetKind(), o.GetName(), k, stored.GetLabels()[k], v)
			}
		}
		if o.GetKind() == "CustomResourceDefinition" {
			waitEstablished(t, ctx, ri, o.GetName())
		}
	}
}

// waitEstablished waits for the CRD's Established condition.
func waitEstablished(t *testing.T, ctx context.Context, ri dynamic.ResourceInterface, name string) {
	t.Helper()
	err := wait.PollUntilContextCancel(ctx, util.Interval, true, func(ctx context.Context) (bool, error) {
		crd, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conditions {
			c := c.(map[string]any)
			if c["type"] == "Established" && c["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("CRD %s never established: %v", name, err)
	}
}
