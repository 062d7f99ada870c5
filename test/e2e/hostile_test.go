package e2e

import (
	"encoding/json"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/execute"
	"github.com/arbiter-dev/arbiter/test/util"
)

var _ = Describe("Hostile input", Label("faults"), Ordered, func() {
	const ns = "hostile"

	BeforeAll(func() {
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		createAccounts(ns, 1)
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"mode": "calm"}})).To(Succeed())
	})

	// operation is a manifest as a user would apply it, with raw params.
	operation := func(name, params string, target map[string]any) string {
		manifest, err := json.Marshal(map[string]any{
			"apiVersion": "arbiter.dev/v1alpha1", "kind": "ConflictResolutionOperation",
			"metadata": map[string]any{"namespace": ns, "name": name},
			"spec": map[string]any{"function": "hostile", "params": json.RawMessage(params), "targets": []any{target},
				"timeout": "1m"},
		})
		Expect(err).NotTo(HaveOccurred())
		return string(manifest)
	}
	account := func(expression string) map[string]any {
		return map[string]any{"apiVersion": "bank.example.com/v1", "kind": "Account", "name": "acct-0", "expression": expression}
	}
	nested := func(depth int) string {
		return strings.Repeat(`{"a":`, depth) + "7" + strings.Repeat("}", depth)
	}

	DescribeTable("kubectl create refuses params beyond arbiter's bounds, naming spec.params",
		func(params, want string) {
			_, err := kubectlWithInput(operation("refused", params, account(`[]`)), "create", "-f", "-")
			Expect(err).To(MatchError(And(ContainSubstring("spec.params"), ContainSubstring(want))))
		},
		Entry("larger than 256 KiB", `{"s":"`+strings.Repeat("x", execute.MaxParamsBytes)+`"}`, "at most 262144 are allowed"),
		Entry("nested deeper than 32 levels", nested(execute.MaxParamsDepth+1), "more than 32 levels deep"),
	)

	It("reads params nested as deep as allowed", func() {
		path := "params" + strings.Repeat(".a", execute.MaxParamsDepth)
		_, err := kubectlWithInput(operation("deep", nested(execute.MaxParamsDepth),
			account(`[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + `+path+`}]`)), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		expectPhase(ns, "deep", arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied)
		expectBalances(ns, []int64{7})
	})

	DescribeTable("fails at run time with the target untouched and the manager healthy",
		func(name, params string, target func() map[string]any, reason, wantMessage string) {
			_, err := kubectlWithInput(operation(name, params, target()), "create", "-f", "-")
			Expect(err).NotTo(HaveOccurred())
			expectPhase(ns, name, arbiterv1alpha1.PhaseFailed, reason)
			op := &arbiterv1alpha1.ConflictResolutionOperation{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, op)).To(Succeed())
			Expect(op.Status.Message).To(ContainSubstring(wantMessage))

			expectBalances(ns, []int64{7})
			cm := &corev1.ConfigMap{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "settings"}, cm)).To(Succeed())
			Expect(cm.Data).To(Equal(map[string]string{"mode": "calm"}))
			Expect(cm.Annotations).NotTo(HaveKey(arbiterv1alpha1.AppliedAnnotation))
			Expect(util.HTTPGet("http://" + manager.probeAddr + "/healthz")).To(Equal("ok"))
			// The manager's memory stays within what its Deployment allows.
			peak := manager.peakResidentBytes()
			fmt.Fprintf(GinkgoWriter, "%s: the manager's peak resident set is %d MiB\n", name, peak>>20)
			Expect(peak).To(BeNumerically("<", managerMemoryLimit()))
		},
		Entry("CEL whose cost explodes (a 2000 x 2000 product)", "quadratic",
			`{"xs": [`+strings.TrimSuffix(strings.Repeat("1,", 2000), ",")+`]}`,
			func() map[string]any {
				return account(`[JSONPatch{op: "replace", path: "/spec/balance", value: size(params.xs.map(a, params.xs.map(b, a * b)))}]`)
			},
			arbiterv1alpha1.ReasonInvalidMutation, "cost limit exceeded"),
		Entry("a JSON Patch copy bomb (30 copies of /data into itself, 2^30 times its size)", "copy-bomb", `{}`,
			func() map[string]any {
				var ops []any
				for k := range 30 {
					ops = append(ops, map[string]any{"op": "copy", "from": "/data", "path": fmt.Sprintf("/data/c%d", k)})
				}
				return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "jsonPatch": ops}
			},
			arbiterv1alpha1.ReasonMutationTooLarge, "over arbiter's limit of 1572864 bytes"),
		Entry("huge params copied into a target beyond what the API server stores", "bloat",
			`{"s":"`+strings.Repeat("x", 200*1024)+`"}`,
			func() map[string]any {
				var patches []string
				for k := range 6 {
					patches = append(patches, fmt.Sprintf(`JSONPatch{op: "add", path: "/data/copy%d", value: params.s}`, k))
				}
				return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "expression": "[" + strings.Join(patches, ", ") + "]"}
			},
			arbiterv1alpha1.ReasonInvalidMutation, "The API server refused the mutated ConfigMap"),
	)

	It("still applies an ordinary operation afterwards", func() {
		Expect(k8sClient.Create(ctx, &arbiterv1alpha1.ConflictResolutionOperation{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ordinary"},
			Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
				Function: "credit-account", Params: &apiextensionsv1.JSON{Raw: []byte(`{"amount": 3}`)},
				Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "acct-0",
					Expression: `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`}},
			},
		})).To(Succeed())
		expectPhase(ns, "ordinary", arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied)
		expectBalances(ns, []int64{10})
		Expect(manager.done).NotTo(BeClosed())
	})
})

// expectPhase waits for operation ns/name to end in phase with reason.
func expectPhase(ns, name string, phase arbiterv1alpha1.OperationPhase, reason string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		op := &arbiterv1alpha1.ConflictResolutionOperation{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, op)).To(Succeed())
		g.Expect(op.Status.Phase).To(Equal(phase), "%s: %s", op.Status.Reason, op.Status.Message)
		g.Expect(op.Status.Reason).To(Equal(reason), op.Status.Message)
	}, util.LongTimeout, util.Interval).Should(Succeed())
}
