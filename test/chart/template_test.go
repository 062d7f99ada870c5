package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/arbiter-dev/arbiter/test/util"
)

// valueCombinations are the values the lint and apply tests render with,
// besides the defaults.
var valueCombinations = map[string][]string{
	"defaults":    nil,
	"certManager": {"--set", "webhook.certManagement=certManager"},
	"certManagerIssuer": {"--set", "webhook.certManagement=certManager",
		"--set", "webhook.certManager.issuerRef.name=corp-ca", "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer"},
	"oneReplica":      {"--set", "replicaCount=1"},
	"threeReplicas":   {"--set", "replicaCount=3"},
	"targetKinds":     {"-f", "testdata/target-kinds.yaml"},
	"monitoring":      {"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true"},
	"extraArgs":       {"--set-json", `extraArgs=["--kube-api-qps=200","--kube-api-burst=400"]`},
	"scheduling":      {"-f", "testdata/scheduling.yaml"},
	"requesterPolicy": {"--set", "requesterPolicy.enabled=true"},
	"noCRDs":          {"--set", "crds.enabled=false"},
}

// field is the value at path in o, or nil.
func field(o *unstructured.Unstructured, path ...string) any {
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	return v
}

// container is the manager container of the rendered Deployment.
func container(t *testing.T, r rendered) map[string]any {
	t.Helper()
	d := r.get(t, "Deployment", "arbiter-controller-manager")
	containers, _ := field(d, "spec", "template", "spec", "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("want one container, got %v", containers)
	}
	return containers[0].(map[string]any)
}

// managerArgs are the manager's arguments in the rendered Deployment.
func managerArgs(t *testing.T, r rendered) []string {
	t.Helper()
	var out []string
	for _, a := range container(t, r)["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

// kustomized is config/default as kustomize renders it (the manifests
// `make deploy` applies), with the kubectl of bin/k8s.
func kustomized(t *testing.T) rendered {
	t.Helper()
	assets, err := util.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", util.Path("config", "default"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v: %s", err, stderr.String())
	}
	objects, err := decodeObjects(out)
	if err != nil {
		t.Fatal(err)
	}
	return rendered{objects: objects}
}

func TestChartLintStrict(t *testing.T) {
	for name, values := range valueCombinations {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", chartDir(), "--namespace", namespace}, chartValues(values)...)
			if out, err := helm(t, args...); err != nil {
				t.Errorf("%v\n%s", err, out)
			}
		})
	}
}

// chartValues makes the -f paths of values relative to test/chart absolute,
// since helm runs from the repository root.
func chartValues(values []string) []string {
	out := slices.Clone(values)
	for i := range out {
		if i > 0 && out[i-1] == "-f" {
			out[i] = util.Path("test", "chart", out[i])
		}
	}
	return out
}

// TestChartFilesAreInSync fails when the chart's copies of generated files
// (make chart-sync) drift from config/.
func TestChartFilesAreInSync(t *testing.T) {
	copies := map[string]string{
		"files/manager-role.yaml":      "config/rbac/role.yaml",
		"files/webhooks.yaml":          "config/webhook/manifests.yaml",
		"files/prometheus-rules.yaml":  "config/prometheus/rules.yaml",
		"files/requested-by.yaml":      "config/admission/requested_by.yaml",
		"files/grafana-dashboard.json": "config/grafana/arbiter.json",
	}
	bases, err := filepath.Glob(util.Path("config", "crd", "bases", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bases {
		copies["files/crds/"+filepath.Base(b)] = "config/crd/bases/" + filepath.Base(b)
	}
	synced, err := filepath.Glob(filepath.Join(chartDir(), "files", "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(synced) != len(bases) {
		t.Errorf("charts/arbiter/files/crds has %d CRDs, config/crd/bases %d: run `make chart-sync`", len(synced), len(bases))
	}
	for copyPath, source := range copies {
		want, err := os.ReadFile(util.Path(strings.Split(source, "/")...))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir(), copyPath))
		if err != nil {
			t.Errorf("charts/arbiter/%s: %v: run `make chart-sync`", copyPath, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("charts/arbiter/%s differs from %s: run `make chart-sync`", copyPath, source)
		}
	}
}

// TestChartDefaultsRenderTheRelease compares the default rendering with
// config/default: same CRDs, same RBAC (every Role and ClusterRole, with the
// manager's generated rules), same webhooks, Services and pod security.
func TestChartDefaultsRenderTheRelease(t *testing.T) {
	r := render(t)
	k := kustomized(t)

	for _, crd := range k.ofKind("CustomResourceDefinition") {
		got := r.get(t, "CustomResourceDefinition", crd.GetName())
		if !equality.Semantic.DeepEqual(got.Object["spec"], crd.Object["spec"]) {
			t.Errorf("CRD %s: spec differs from config/crd/bases", crd.GetName())
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s: want annotation helm.sh/resource-policy=keep, so that uninstall keeps every operation; got %v", crd.GetName(), got.GetAnnotations())
		}
	}
	if n, want := len(r.ofKind("CustomResourceDefinition")), len(k.ofKind("CustomResourceDefinition")); n != want {
		t.Errorf("%d CRDs rendered, config/default has %d", n, want)
	}

	generated := decodeFile(t, "config", "rbac", "role.yaml")[0]
	if got := r.get(t, "ClusterRole", "arbiter-manager-role"); !equality.Semantic.DeepEqual(got.Object["rules"], generated.Object["rules"]) {
		t.Errorf("ClusterRole arbiter-manager-role: rules differ from config/rbac/role.yaml:\n%v", got.Object["rules"])
	}
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, role := range k.ofKind(kind) {
			if role.GetName() == "arbiter-manager-target-role" {
				continue // values targetKinds, tested below
			}
			got := r.find(kind, role.GetName())
			if got == nil {
				t.Errorf("%s %s of config/default is not rendered", kind, role.GetName())
				continue
			}
			if !equality.Semantic.DeepEqual(got.Object["rules"], role.Object["rules"]) {
				t.Errorf("%s %s: rules differ from config/default:\n got %v\nwant %v", kind, role.GetName(), got.Object["rules"], role.Object["rules"])
			}
			if kind == "ClusterRole" && !equality.Semantic.DeepEqual(
				aggregationLabels(got.GetLabels()), aggregationLabels(role.GetLabels())) {
				t.Errorf("ClusterRole %s: aggregation labels %v, want %v", role.GetName(), got.GetLabels(), role.GetLabels())
			}
		}
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, binding := range k.ofKind(kind) {
			if binding.GetName() == "arbiter-manager-target-rolebinding" {
				continue
			}
			got := r.find(kind, binding.GetName())
			if got == nil {
				t.Errorf("%s %s of config/default is not rendered", kind, binding.GetName())
				continue
			}
			for _, f := range []string{"roleRef", "subjects"} {
				if !equality.Semantic.DeepEqual(got.Object[f], binding.Object[f]) {
					t.Errorf("%s %s: %s %v, want %v", kind, binding.GetName(), f, got.Object[f], binding.Object[f])
				}
			}
		}
	}
	if r.find("ClusterRole", "arbiter-manager-target-role") != nil {
		t.Error("the target ClusterRole is rendered by default; arbiter must change no kind until an admin lists it in targetKinds")
	}

	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, want := range k.ofKind(kind) {
			got := r.get(t, kind, want.GetName())
			if !equality.Semantic.DeepEqual(got.Object["webhooks"], want.Object["webhooks"]) {
				t.Errorf("%s %s: webhooks differ from config/default:\n got %v\nwant %v", kind, want.GetName(), got.Object["webhooks"], want.Object["webhooks"])
			}
			if len(got.GetAnnotations()) != 0 {
				t.Errorf("%s %s: annotations %v with self-managed certificates, want none", kind, want.GetName(), got.GetAnnotations())
			}
		}
	}
	for _, svc := range k.ofKind("Service") {
		got := r.get(t, "Service", svc.GetName())
		if !equality.Semantic.DeepEqual(field(got, "spec", "ports"), field(svc, "spec", "ports")) {
			t.Errorf("Service %s: ports %v, want %v", svc.GetName(), field(got, "spec", "ports"), field(svc, "spec", "ports"))
		}
	}

	deployment := r.get(t, "Deployment", "arbiter-controller-manager")
	release := k.get(t, "Deployment", "arbiter-controller-manager")
	if got, want := field(deployment, "spec", "template", "spec", "securityContext"), field(release, "spec", "template", "spec", "securityContext"); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("pod securityContext %v, want config/manager's %v", got, want)
	}
	releaseContainer := field(release, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	c := container(t, r)
	for _, f := range []string{"securityContext", "livenessProbe", "readinessProbe", "command"} {
		if !equality.Semantic.DeepEqual(c[f], releaseContainer[f]) {
			t.Errorf("manager container %s %v, want config/manager's %v", f, c[f], releaseContainer[f])
		}
	}
	// The release's certificate flags differ by design (self-managed here,
	// cert-manager in config/default); every other argument is the same.
	chartArgs := managerArgs(t, r)
	for _, a := range releaseContainer["args"].([]any) {
		if a := a.(string); !strings.HasPrefix(a, "--webhook-cert-management") && !slices.Contains(chartArgs, a) {
			t.Errorf("config/default passes the manager %s; the chart does not (args %q)", a, chartArgs)
		}
	}
	if got := field(deployment, "spec", "template", "spec", "serviceAccountName"); got != "arbiter-controller-manager" {
		t.Errorf("serviceAccountName %v, want arbiter-controller-manager", got)
	}
	r.get(t, "ServiceAccount", "arbiter-controller-manager")
}

// aggregationLabels keeps the labels that aggregate a ClusterRole into the
// built-in roles.
func aggregationLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			out[k] = v
		}
	}
	return out
}

func TestChartDefaultsManageTheirOwnCertificates(t *testing.T) {
	r := render(t)

	wantArgs := []string{
		"--leader-elect",
		"--graceful-shutdown-timeout=30s",
		"--metrics-bind-address=:8443",
		"--health-probe-bind-address=:8081",
		"--webhook-cert-dir=/tmp/k8s-webhook-server/serving-certs",
		"--webhook-cert-management=self",
		"--webhook-cert-secret=arbiter-webhook-server-cert",
		"--webhook-service=arbiter-webhook-service",
		"--mutating-webhook-configuration=arbiter-mutating-webhook-configuration",
		"--validating-webhook-configuration=arbiter-validating-webhook-configuration",
		"--operation-workers=8",
		"--cleanup-workers=16",
		"--default-cleanup-strategy=None",
		"--zap-log-level=info",
	}
	if got := managerArgs(t, r); !slices.Equal(got, wantArgs) {
		t.Errorf("manager args\n got %q\nwant %q", got, wantArgs)
	}
	c := container(t, r)
	wantEnv := []any{map[string]any{"name": "POD_NAMESPACE", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}}}}
	if !equality.Semantic.DeepEqual(c["env"], wantEnv) {
		t.Errorf("env %v, want POD_NAMESPACE from the downward API", c["env"])
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	raw, err := os.ReadFile(filepath.Join(chartDir(), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &chart); err != nil {
		t.Fatal(err)
	}
	if want := "ghcr.io/arbiter-dev/arbiter:" + chart.AppVersion; c["image"] != want {
		t.Errorf("image %v, want %s (the tag defaults to appVersion)", c["image"], want)
	}

	secret := r.get(t, "Secret", "arbiter-webhook-server-cert")
	if secret.GetNamespace() != namespace || secret.Object["data"] != nil {
		t.Errorf("Secret %s/%s with data %v, want an empty Secret in %s for the manager to fill", secret.GetNamespace(), secret.GetName(), secret.Object["data"], namespace)
	}
	d := r.get(t, "Deployment", "arbiter-controller-manager")
	volumes := field(d, "spec", "template", "spec", "volumes").([]any)
	if got := volumes[0].(map[string]any)["secret"].(map[string]any)["secretName"]; got != "arbiter-webhook-server-cert" {
		t.Errorf("webhook-certs volume mounts Secret %v, want arbiter-webhook-server-cert", got)
	}

	role := r.get(t, "Role", "arbiter-webhook-cert-role")
	if role.GetNamespace() != namespace {
		t.Errorf("Role %s in %q, want the release namespace", role.GetName(), role.GetNamespace())
	}
	wantSecretRules := []any{
		map[string]any{"apiGroups": []any{""}, "resources": []any{"secrets"}, "resourceNames": []any{"arbiter-webhook-server-cert"}, "verbs": []any{"get", "update", "patch"}},
		map[string]any{"apiGroups": []any{""}, "resources": []any{"secrets"}, "verbs": []any{"list", "watch"}},
	}
	if !equality.Semantic.DeepEqual(role.Object["rules"], wantSecretRules) {
		t.Errorf("Role %s: rules %v, want %v", role.GetName(), role.Object["rules"], wantSecretRules)
	}
	for _, rule := range r.get(t, "ClusterRole", "arbiter-webhook-cert-role").Object["rules"].([]any) {
		rule := rule.(map[string]any)
		names, _ := rule["resourceNames"].([]any)
		verbs := rule["verbs"].([]any)
		if slices.Contains(verbs, any("update")) || slices.Contains(verbs, any("patch")) || slices.Contains(verbs, any("get")) {
			if len(names) != 1 || !strings.HasPrefix(names[0].(string), "arbiter-") || !strings.HasSuffix(names[0].(string), "-webhook-configuration") {
				t.Errorf("ClusterRole arbiter-webhook-cert-role: %v on %v not restricted to arbiter's webhook configurations (resourceNames %v)", verbs, rule["resources"], names)
			}
		}
	}
	for _, kind := range []string{"Issuer", "Certificate", "ServiceMonitor", "PrometheusRule", "MutatingAdmissionPolicy"} {
		if objs := r.ofKind(kind); len(objs) != 0 {
			t.Errorf("%s rendered by default; want it only when its value turns it on", kind)
		}
	}
}

func TestChartCertManager(t *testing.T) {
	r := render(t, valueCombinations["certManager"]...)

	issuer := r.get(t, "Issuer", "arbiter-selfsigned-issuer")
	cert := r.get(t, "Certificate", "arbiter-serving-cert")
	if got := field(cert, "spec", "issuerRef", "name"); got != issuer.GetName() {
		t.Errorf("Certificate issuerRef.name %v, want the rendered Issuer %s", got, issuer.GetName())
	}
	if got := field(cert, "spec", "secretName"); got != "arbiter-webhook-server-cert" {
		t.Errorf("Certificate secretName %v, want the Secret the Deployment mounts", got)
	}
	wantDNS := []any{"arbiter-webhook-service.arbiter-system.svc", "arbiter-webhook-service.arbiter-system.svc.cluster.local"}
	if got := field(cert, "spec", "dnsNames"); !equality.Semantic.DeepEqual(got, wantDNS) {
		t.Errorf("Certificate dnsNames %v, want %v", got, wantDNS)
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, w := range r.ofKind(kind) {
			if got := w.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != "arbiter-system/arbiter-serving-cert" {
				t.Errorf("%s %s: cert-manager.io/inject-ca-from %q, want arbiter-system/arbiter-serving-cert", kind, w.GetName(), got)
			}
		}
	}
	got := managerArgs(t, r)
	if !slices.Contains(got, "--webhook-cert-management=external") || slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, "--webhook-cert-secret") }) {
		t.Errorf("args %q: want --webhook-cert-management=external and no self-managed certificate flags", got)
	}
	for _, o := range []struct{ kind, name string }{{"Secret", "arbiter-webhook-server-cert"}, {"Role", "arbiter-webhook-cert-role"}, {"ClusterRole", "arbiter-webhook-cert-role"}} {
		if r.find(o.kind, o.name) != nil {
			t.Errorf("%s %s rendered with cert-manager: the manager needs no certificate rights then", o.kind, o.name)
		}
	}

	r = render(t, valueCombinations["certManagerIssuer"]...)
	if r.find("Issuer", "arbiter-selfsigned-issuer") != nil {
		t.Error("the self-signed Issuer is rendered although issuerRef names one")
	}
	wantRef := map[string]any{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
	if got := field(r.get(t, "Certificate", "arbiter-serving-cert"), "spec", "issuerRef"); !equality.Semantic.DeepEqual(got, wantRef) {
		t.Errorf("Certificate issuerRef %v, want %v", got, wantRef)
	}
}

func TestChartReplicasAndDisruptionBudget(t *testing.T) {
	for _, tc := range []struct {
		name     string
		values   []string
		replicas int64
		pdb      bool
	}{
		{name: "defaults", replicas: 2, pdb: true},
		{name: "oneReplica", values: valueCombinations["oneReplica"], replicas: 1},
		{name: "threeReplicas", values: valueCombinations["threeReplicas"], replicas: 3, pdb: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.values...)
			if got := field(r.get(t, "Deployment", "arbiter-controller-manager"), "spec", "replicas"); got != tc.replicas {
				t.Errorf("replicas %v, want %d", got, tc.replicas)
			}
			pdb := r.find("PodDisruptionBudget", "arbiter-controller-manager")
			if (pdb != nil) != tc.pdb {
				t.Fatalf("PodDisruptionBudget rendered: %v, want %v", pdb != nil, tc.pdb)
			}
			if pdb == nil {
				return
			}
			if got := field(pdb, "spec", "minAvailable"); got != int64(1) {
				t.Errorf("PodDisruptionBudget minAvailable %v, want 1", got)
			}
			selector := field(pdb, "spec", "selector", "matchLabels")
			podLabels := field(r.get(t, "Deployment", "arbiter-controller-manager"), "spec", "selector", "matchLabels")
			if !equality.Semantic.DeepEqual(selector, podLabels) {
				t.Errorf("PodDisruptionBudget selects %v, the Deployment's pods are %v", selector, podLabels)
			}
		})
	}

	_, err := renderRaw(t, "--set", "replicaCount=3", "--set", "leaderElection.enabled=false")
	if err == nil || !strings.Contains(err.Error(), "leaderElection.enabled") {
		t.Errorf("three replicas without leader election: got %v, want an error naming leaderElection.enabled", err)
	}
	r := render(t, "--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
	if slices.Contains(managerArgs(t, r), "--leader-elect") {
		t.Error("--leader-elect passed with leaderElection.enabled=false")
	}
}

func TestChartTargetKinds(t *testing.T) {
	r := render(t, valueCombinations["targetKinds"]...)
	// testdata/target-kinds.yaml lists the kinds of config/rbac/target_role.yaml.
	var want *unstructured.Unstructured
	for _, o := range decodeFile(t, "config", "rbac", "target_role.yaml") {
		if o.GetKind() == "ClusterRole" {
			want = o
		}
	}
	role := r.get(t, "ClusterRole", "arbiter-manager-target-role")
	if !equality.Semantic.DeepEqual(role.Object["rules"], want.Object["rules"]) {
		t.Errorf("target ClusterRole rules %v, want config/rbac/target_role.yaml's %v", role.Object["rules"], want.Object["rules"])
	}
	binding := r.get(t, "ClusterRoleBinding", "arbiter-manager-target-rolebinding")
	wantSubjects := []any{map[string]any{"kind": "ServiceAccount", "name": "arbiter-controller-manager", "namespace": namespace}}
	if !equality.Semantic.DeepEqual(binding.Object["subjects"], wantSubjects) || field(binding, "roleRef", "name") != role.GetName() {
		t.Errorf("ClusterRoleBinding %s binds %v to %v, want the manager's ServiceAccount to %s", binding.GetName(), binding.Object["subjects"], binding.Object["roleRef"], role.GetName())
	}

	_, err := renderRaw(t, "--set-json", `targetKinds=[{"apiGroups":[""],"resources":["configmaps"]}]`)
	if err == nil || !strings.Contains(err.Error(), "targetKinds") || !strings.Contains(err.Error(), "verbs") {
		t.Errorf("a target kind without verbs: got %v, want an error naming targetKinds and verbs", err)
	}
}

func TestChartMonitoring(t *testing.T) {
	r := render(t, valueCombinations["monitoring"]...)
	monitor := r.get(t, "ServiceMonitor", "arbiter-controller-manager-metrics-monitor")
	svc := r.get(t, "Service", "arbiter-controller-manager-metrics-service")
	for k, v := range field(monitor, "spec", "selector", "matchLabels").(map[string]any) {
		if svc.GetLabels()[k] != v {
			t.Errorf("ServiceMonitor selects %s=%v; the metrics Service's labels are %v", k, v, svc.GetLabels())
		}
	}
	endpoints := field(monitor, "spec", "endpoints").([]any)
	if port := endpoints[0].(map[string]any)["port"]; port != field(svc, "spec", "ports").([]any)[0].(map[string]any)["name"] {
		t.Errorf("ServiceMonitor scrapes port %v, not the metrics Service's", port)
	}
	// The chart scrapes as config/prometheus does: honorLabels above all,
	// without which every alert "by (namespace)" groups under the release's.
	kustomized := field(decodeFile(t, "config", "prometheus", "monitor.yaml")[0], "spec", "endpoints").([]any)[0].(map[string]any)
	for k, v := range kustomized {
		if got := endpoints[0].(map[string]any)[k]; !equality.Semantic.DeepEqual(got, v) {
			t.Errorf("the chart's ServiceMonitor endpoint has %s: %v; config/prometheus/monitor.yaml has %v", k, got, v)
		}
	}

	rule := r.get(t, "PrometheusRule", "arbiter-alerts")
	want := decodeFile(t, "config", "prometheus", "rules.yaml")[0]
	if !equality.Semantic.DeepEqual(rule.Object["spec"], want.Object["spec"]) {
		t.Errorf("PrometheusRule spec differs from config/prometheus/rules.yaml:\n%v", rule.Object["spec"])
	}

	dashboard := r.get(t, "ConfigMap", "arbiter-grafana-dashboard")
	if dashboard.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard ConfigMap lacks the label Grafana's sidecar looks for: %v", dashboard.GetLabels())
	}
	wantJSON, err := os.ReadFile(util.Path("config", "grafana", "arbiter.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := field(dashboard, "data", "arbiter.json"); got != strings.TrimRight(string(wantJSON), "\n") {
		t.Errorf("the dashboard ConfigMap's arbiter.json differs from config/grafana/arbiter.json")
	}
}

func TestChartExtraArgsAndScheduling(t *testing.T) {
	defaults := managerArgs(t, render(t))
	got := managerArgs(t, render(t, valueCombinations["extraArgs"]...))
	if want := append(slices.Clone(defaults), "--kube-api-qps=200", "--kube-api-burst=400"); !slices.Equal(got, want) {
		t.Errorf("args with extraArgs\n got %q\nwant %q", got, want)
	}
	got = managerArgs(t, render(t, "--set", "defaultCleanupStrategy=Deferred", "--set", "operationWorkers=4", "--set", "cleanupWorkers=32"))
	for _, a := range []string{"--default-cleanup-strategy=Deferred", "--operation-workers=4", "--cleanup-workers=32"} {
		if !slices.Contains(got, a) {
			t.Errorf("args %q lack %s", got, a)
		}
	}
	_, err := renderRaw(t, "--set", "defaultCleanupStrategy=Sometimes")
	if err == nil || !strings.Contains(err.Error(), "defaultCleanupStrategy") {
		t.Errorf("defaultCleanupStrategy=Sometimes: got %v, want an error naming defaultCleanupStrategy", err)
	}
	_, err = renderRaw(t, "--set", "webhook.certManagement=vault")
	if err == nil || !strings.Contains(err.Error(), "certManagement") {
		t.Errorf("webhook.certManagement=vault: got %v, want an error naming certManagement", err)
	}

	r := render(t, valueCombinations["scheduling"]...)
	pod := field(r.get(t, "Deployment", "arbiter-controller-manager"), "spec", "template", "spec").(map[string]any)
	if pod["priorityClassName"] != "system-cluster-critical" {
		t.Errorf("priorityClassName %v, want system-cluster-critical", pod["priorityClassName"])
	}
	if !equality.Semantic.DeepEqual(pod["nodeSelector"], map[string]any{"kubernetes.io/os": "linux"}) {
		t.Errorf("nodeSelector %v", pod["nodeSelector"])
	}
	if tolerations, _ := pod["tolerations"].([]any); len(tolerations) != 1 {
		t.Errorf("tolerations %v, want the one of testdata/scheduling.yaml", pod["tolerations"])
	}
	if pod["affinity"] == nil {
		t.Error("affinity not rendered")
	}
	constraints, _ := pod["topologySpreadConstraints"].([]any)
	if len(constraints) != 1 {
		t.Fatalf("topologySpreadConstraints %v, want one", pod["topologySpreadConstraints"])
	}
	selector := constraints[0].(map[string]any)["labelSelector"]
	podSelector := field(r.get(t, "Deployment", "arbiter-controller-manager"), "spec", "selector")
	if !equality.Semantic.DeepEqual(selector, podSelector) {
		t.Errorf("topology spread labelSelector %v, want the Deployment's selector %v", selector, podSelector)
	}
	if c := container(t, r); !equality.Semantic.DeepEqual(c["resources"], map[string]any{
		"requests": map[string]any{"cpu": "200m", "memory": "256Mi"},
		"limits":   map[string]any{"memory": "1Gi"},
	}) {
		t.Errorf("resources %v, want those of testdata/scheduling.yaml", c["resources"])
	}
}

func TestChartRequesterPolicy(t *testing.T) {
	r := render(t, valueCombinations["requesterPolicy"]...)
	policy := r.get(t, "MutatingAdmissionPolicy", "arbiter-requested-by")
	binding := r.get(t, "MutatingAdmissionPolicyBinding", "arbiter-requested-by")
	if got := field(binding, "spec", "policyName"); got != policy.GetName() {
		t.Errorf("binding names policy %v, want %s", got, policy.GetName())
	}
	for _, want := range decodeFile(t, "config", "admission", "requested_by.yaml") {
		if want.GetKind() == "MutatingAdmissionPolicy" && !equality.Semantic.DeepEqual(policy.Object["spec"], want.Object["spec"]) {
			t.Errorf("MutatingAdmissionPolicy spec differs from config/admission/requested_by.yaml")
		}
	}
}

func TestChartWithoutCRDs(t *testing.T) {
	r := render(t, valueCombinations["noCRDs"]...)
	if crds := r.ofKind("CustomResourceDefinition"); len(crds) != 0 {
		t.Errorf("%d CRDs rendered with crds.enabled=false", len(crds))
	}
}

// TestChartNamesFollowTheRelease checks that another release name renames
// every object and that the manager's flags and the webhooks follow.
func TestChartNamesFollowTheRelease(t *testing.T) {
	out, err := helm(t, "template", "prod", chartDir(), "--namespace", "ops")
	if err != nil {
		t.Fatal(err)
	}
	objects, err := decodeObjects([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{objects: objects}
	for _, o := range r.objects {
		if o.GetKind() != "CustomResourceDefinition" && !strings.HasPrefix(o.GetName(), "prod-arbiter-") {
			t.Errorf("%s %s: name does not start with the release's prefix prod-arbiter-", o.GetKind(), o.GetName())
		}
		if ns := o.GetNamespace(); ns != "" && ns != "ops" {
			t.Errorf("%s %s in namespace %s, want the release namespace ops", o.GetKind(), o.GetName(), ns)
		}
	}
	got := managerArgs(t, rendered{objects: []*unstructured.Unstructured{renamed(r.get(t, "Deployment", "prod-arbiter-controller-manager"))}})
	for _, a := range []string{
		"--webhook-cert-secret=prod-arbiter-webhook-server-cert",
		"--webhook-service=prod-arbiter-webhook-service",
		"--mutating-webhook-configuration=prod-arbiter-mutating-webhook-configuration",
		"--validating-webhook-configuration=prod-arbiter-validating-webhook-configuration",
	} {
		if !slices.Contains(got, a) {
			t.Errorf("args %q lack %s", got, a)
		}
	}
	webhooks := r.get(t, "ValidatingWebhookConfiguration", "prod-arbiter-validating-webhook-configuration").Object["webhooks"].([]any)
	svc := webhooks[0].(map[string]any)["clientConfig"].(map[string]any)["service"].(map[string]any)
	if svc["name"] != "prod-arbiter-webhook-service" || svc["namespace"] != "ops" {
		t.Errorf("validating webhook calls Service %v/%v, want ops/prod-arbiter-webhook-service", svc["namespace"], svc["name"])
	}
}

// renamed is a copy of the Deployment under the name the helpers look for.
func renamed(d *unstructured.Unstructured) *unstructured.Unstructured {
	c := d.DeepCopy()
	c.SetName("arbiter-controller-manager")
	return c
}
