package integration

import (
	"fmt"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// minimalOperation is the smallest valid operation; each invalid case below
// breaks it in one way with a JSON merge patch.
const minimalOperation = `
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {generateName: op-, namespace: default}
spec:
  function: update-account
  targets:
  - apiVersion: bank.example.com/v1
    kind: Account
    name: alice
    jsonPatch:
    - {op: replace, path: /spec/frozen, value: true}
`

// minimalPolicy is the smallest valid cleanup policy: no spec at all.
const minimalPolicy = `
apiVersion: arbiter.dev/v1alpha1
kind: CleanupPolicy
metadata: {generateName: policy-, namespace: default}
`

// manifest returns base with the YAML merge patch applied (RFC 7386: a null
// removes a field, a list replaces the whole list).
func manifest(base, patch string) *unstructured.Unstructured {
	GinkgoHelper()
	baseJSON, err := yaml.YAMLToJSON([]byte(base))
	Expect(err).NotTo(HaveOccurred())
	merged := baseJSON
	if patch != "" {
		patchJSON, err := yaml.YAMLToJSON([]byte(patch))
		Expect(err).NotTo(HaveOccurred())
		merged, err = jsonpatch.MergePatch(baseJSON, patchJSON)
		Expect(err).NotTo(HaveOccurred())
	}
	u := &unstructured.Unstructured{}
	Expect(u.UnmarshalJSON(merged)).To(Succeed())
	return u
}

func operation(patch string) *unstructured.Unstructured { return manifest(minimalOperation, patch) }
func policy(patch string) *unstructured.Unstructured    { return manifest(minimalPolicy, patch) }

// accountTargets returns n distinct valid targets as YAML flow items.
func accountTargets(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{apiVersion: bank.example.com/v1, kind: Account, name: acct-%d, mergePatch: {spec: {frozen: true}}}`, i)
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// outcomeRetentions returns n retentionByOutcome entries as a YAML flow
// list: one per phase, then one per (phase, reason) arbiter sets, in that
// order, then repeats (16 are distinct).
func outcomeRetentions(n int) string {
	var all []string
	for _, phase := range []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed", "Cancelled"} {
		all = append(all, fmt.Sprintf(`{phase: %s, retention: 1h}`, phase))
	}
	for _, phase := range []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed", "Cancelled"} {
		for _, reason := range arbiterv1alpha1.ZombieReasons[phase] {
			all = append(all, fmt.Sprintf(`{phase: %s, reason: %s, retention: 30m}`, phase, reason))
		}
	}
	items := make([]string, n)
	for i := range items {
		items[i] = all[i%len(all)]
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// create submits obj as `kubectl apply` does: with strict field validation,
// so that unknown fields are refused rather than silently dropped.
func create(obj client.Object) error {
	return k8sClient.Create(ctx, obj, client.FieldValidation("Strict"))
}

// expectRefused creates obj and expects the API server to refuse it with a
// message naming field and saying why.
func expectRefused(obj *unstructured.Unstructured, field, why string) {
	GinkgoHelper()
	err := create(obj)
	Expect(err).To(HaveOccurred(), "the API server accepted it")
	Expect(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)).To(BeTrue(), "unexpected error kind: %v", err)
	Expect(err.Error()).To(ContainSubstring(field))
	Expect(err.Error()).To(ContainSubstring(why))
}

var _ = Describe("The API server", func() {
	DescribeTable("refuses an invalid manifest with a message naming the field",
		expectRefused,
		// ConflictResolutionOperation
		Entry("no targets", operation(`spec: {targets: []}`),
			"spec.targets", "at least 1 item"),
		Entry("targets missing", operation(`spec: {targets: null}`),
			"spec.targets", "Required value"),
		Entry("17 targets", operation(`spec: {targets: `+accountTargets(17)+`}`),
			"spec.targets", "at most 16 items"),
		Entry("the same target twice", operation(`spec: {targets: `+
			`[{apiVersion: bank.example.com/v1, kind: Account, name: alice, mergePatch: {a: 1}},`+
			` {apiVersion: bank.example.com/v1, kind: Account, name: alice, mergePatch: {b: 2}}]}`),
			"spec.targets", "each target may appear only once"),
		Entry("priority 0", operation(`spec: {priority: 0}`),
			"spec.priority", "greater than or equal to 1"),
		Entry("priority 11", operation(`spec: {priority: 11}`),
			"spec.priority", "less than or equal to 10"),
		Entry("function missing", operation(`spec: {function: null}`),
			"spec.function", "Required value"),
		Entry("function not a DNS label", operation(`spec: {function: Update_Account}`),
			"spec.function", "should match"),
		Entry("function longer than 63", operation(`spec: {function: `+strings.Repeat("a", 64)+`}`),
			"spec.function", "may not be more than 63"),
		Entry("a target with two mutations", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account, name: alice,`+
			` mergePatch: {spec: {frozen: true}}, jsonPatch: [{op: remove, path: /spec/frozen}]}]}`),
			"spec.targets[0]", "exactly one of jsonPatch, mergePatch or expression must be set"),
		Entry("a target with no mutation", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account, name: alice}]}`),
			"spec.targets[0]", "exactly one of jsonPatch, mergePatch or expression must be set"),
		Entry("a namespace on a target", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account, name: alice,`+
			` namespace: other, mergePatch: {spec: {frozen: true}}}]}`),
			"spec.targets[0].namespace", "unknown field"),
		Entry("a target kind in lower case", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: account, name: alice,`+
			` mergePatch: {spec: {frozen: true}}}]}`),
			"spec.targets[0].kind", "should match"),
		Entry("a malformed target apiVersion", operation(`spec: {targets: [{apiVersion: "bank.example.com/", kind: Account, name: alice,`+
			` mergePatch: {spec: {frozen: true}}}]}`),
			"spec.targets[0].apiVersion", "should match"),
		Entry("an unknown JSON Patch op", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account, name: alice,`+
			` jsonPatch: [{op: merge, path: /spec/frozen, value: true}]}]}`),
			"spec.targets[0].jsonPatch[0].op", "Unsupported value"),
		Entry("a JSON Patch path that is not a JSON Pointer", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: replace, path: spec/frozen, value: true}]}]}`),
			"spec.targets[0].jsonPatch[0].path", "should match"),
		Entry("a JSON Patch replace without a value", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: replace, path: /spec/frozen}]}]}`),
			"spec.targets[0].jsonPatch[0].value", "required for replace"),
		Entry("a JSON Patch remove with a value", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: remove, path: /spec/frozen, value: true}]}]}`),
			"spec.targets[0].jsonPatch[0].value", "not allowed for remove"),
		Entry("a CEL expression that does not compile", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, expression: '[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance +}]'}]}`),
			"spec.targets[0].expression", "Syntax error"),
		Entry("a CEL expression naming an unknown variable", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, expression: '[JSONPatch{op: "replace", path: "/spec/balance", value: oldObject.spec.balance}]'}]}`),
			"spec.targets[0].expression", "undeclared reference to 'oldObject'"),
		Entry("a CEL expression that returns no patch list", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, expression: 'object.spec.balance + 1'}]}`),
			"spec.targets[0].expression", "must return a list of JSONPatch"),
		Entry("a JSON Patch move without from", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: move, path: /spec/owner}]}]}`),
			"spec.targets[0].jsonPatch[0]", "from is required for move and copy"),
		Entry("a merge patch that is not an object", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, mergePatch: frozen}]}`),
			"spec.targets[0].mergePatch", "must be of type object"),
		Entry("params that are not an object", operation(`spec: {params: [1, 2]}`),
			"spec.params", "must be of type object"),
		Entry("an unknown onConflict", operation(`spec: {staging: {onConflict: Retry}}`),
			"spec.staging.onConflict", "Unsupported value"),
		Entry("a staging window of 11s", operation(`spec: {staging: {window: 11s}}`),
			"spec.staging.window", "must be at most 10s"),
		Entry("a garbage staging window", operation(`spec: {staging: {window: soon}}`),
			"spec.staging.window", "should match"),
		Entry("a negative grace period", operation(`spec: {gracePeriod: -1s}`),
			"spec.gracePeriod", "should match"),
		Entry("a zero timeout", operation(`spec: {timeout: 0s}`),
			"spec.timeout", "must be greater than 0s"),
		Entry("a staging window no shorter than the timeout", operation(`spec: {timeout: 5s, staging: {window: 5s}}`),
			"spec.staging.window", "must be shorter than spec.timeout"),
		Entry("a parentRef naming the operation itself", manifest(minimalOperation, `metadata: {name: self, generateName: null}
spec: {parentRef: {name: self}}`),
			"spec.parentRef.name", "must not name the operation itself"),
		Entry("a JSON Patch that renames the target", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: replace, path: /metadata/name, value: bob}]}]}`),
			"spec.targets[0].jsonPatch[0].path", "must not change apiVersion, kind, metadata.name"),
		Entry("a JSON Patch that removes arbiter's record", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: remove, path: /metadata/annotations/arbiter.dev~1applied}]}]}`),
			"spec.targets[0].jsonPatch[0].path", "the arbiter.dev/applied annotation"),
		Entry("a JSON Patch that moves the name away", operation(`spec: {targets: [{apiVersion: bank.example.com/v1, kind: Account,`+
			` name: alice, jsonPatch: [{op: move, from: /metadata/name, path: /spec/owner}]}]}`),
			"spec.targets[0].jsonPatch[0].from", "must not move apiVersion"),
		Entry("a garbage timeout", operation(`spec: {timeout: "30 seconds"}`),
			"spec.timeout", "should match"),
		Entry("negative maxRetries", operation(`spec: {occ: {maxRetries: -1}}`),
			"spec.occ.maxRetries", "greater than or equal to 0"),
		Entry("maxRetries over 100", operation(`spec: {occ: {maxRetries: 101}}`),
			"spec.occ.maxRetries", "less than or equal to 100"),
		Entry("a non-numeric backoffFactor", operation(`spec: {occ: {backoffFactor: fast}}`),
			"spec.occ.backoffFactor", "should match"),
		Entry("a backoffFactor below 1", operation(`spec: {occ: {backoffFactor: "0.5"}}`),
			"spec.occ.backoffFactor", "must be between 1 and 10"),
		Entry("a grace period over 5m", operation(`spec: {gracePeriod: 6m}`),
			"spec.gracePeriod", "must be at most 5m"),
		Entry("a baseDelay of 1000h", operation(`spec: {occ: {baseDelay: 1000h, maxDelay: 1000h}}`),
			"spec.occ.baseDelay", "must be at most 10s"),
		Entry("a maxDelay over 1m", operation(`spec: {occ: {maxDelay: 2m}}`),
			"spec.occ.maxDelay", "must be at most 1m"),
		Entry("a baseDelay above maxDelay", operation(`spec: {occ: {baseDelay: 2s, maxDelay: 1s}}`),
			"spec.occ", "baseDelay must not exceed maxDelay"),
		Entry("an unknown spec field", operation(`spec: {retries: 3}`),
			"spec.retries", "unknown field"),

		// CleanupPolicy
		Entry("an unknown strategy", policy(`spec: {strategy: Eventually}`),
			"spec.strategy", "Unsupported value"),
		Entry("a negative historyLimit", policy(`spec: {historyLimit: -1}`),
			"spec.historyLimit", "greater than or equal to 0"),
		Entry("maxFailureRatePercent 101", policy(`spec: {health: {maxFailureRatePercent: 101}}`),
			"spec.health.maxFailureRatePercent", "less than or equal to 100"),
		Entry("maxDeletionsPerSecond 0", policy(`spec: {maxDeletionsPerSecond: 0}`),
			"spec.maxDeletionsPerSecond", "greater than or equal to 1"),
		Entry("a phase that is not a zombie phase", policy(`spec: {phases: [Succeeded]}`),
			"spec.phases[0]", "Unsupported value"),
		Entry("a phase listed twice", policy(`spec: {phases: [Rejected, Rejected]}`),
			"spec.phases[1]", "Duplicate value"),
		Entry("no phases", policy(`spec: {phases: []}`),
			"spec.phases", "at least 1 item"),
		Entry("a garbage retention", policy(`spec: {retention: "1 day"}`),
			"spec.retention", "should match"),
		Entry("a negative maxZombieAge", policy(`spec: {health: {maxZombieAge: -24h}}`),
			"spec.health.maxZombieAge", "should match"),
		Entry("an unknown policy field", policy(`spec: {schedule: hourly}`),
			"spec.schedule", "unknown field"),
		Entry("a phase given two retentions", policy(`spec: {retentionByOutcome: [{phase: Failed, retention: 1h}, {phase: Failed, retention: 2h}]}`),
			"spec.retentionByOutcome", "each (phase, reason) pair may appear only once"),
		Entry("a phase and reason given two retentions", policy(`spec: {retentionByOutcome: `+
			`[{phase: Failed, reason: Timeout, retention: 1h}, {phase: Failed, retention: 1h}, {phase: Failed, reason: Timeout, retention: 2h}]}`),
			"spec.retentionByOutcome", "each (phase, reason) pair may appear only once"),
		Entry("a retention for a phase that is not a zombie phase", policy(`spec: {retentionByOutcome: [{phase: Succeeded, retention: 1h}]}`),
			"spec.retentionByOutcome[0].phase", "Unsupported value"),
		Entry("a retention for a phase the policy does not list", policy(`spec: {phases: [Rejected], retentionByOutcome: [{phase: Failed, retention: 1h}]}`),
			"spec.retentionByOutcome", "each entry's phase must be listed in spec.phases"),
		Entry("a retention for a reason arbiter never sets", policy(`spec: {retentionByOutcome: [{phase: Failed, reason: Timedout, retention: 1h}]}`),
			"spec.retentionByOutcome[0].reason", "Unsupported value"),
		Entry("a retention for a reason of another phase", policy(`spec: {retentionByOutcome: [{phase: Rejected, reason: Timeout, retention: 1h}]}`),
			"spec.retentionByOutcome[0].reason", "reason must be one arbiter sets for the phase"),
		Entry("a garbage retention for an outcome", policy(`spec: {retentionByOutcome: [{phase: Failed, retention: "1 day"}]}`),
			"spec.retentionByOutcome[0].retention", "should match"),
		Entry("a negative retention for an outcome", policy(`spec: {retentionByOutcome: [{phase: Failed, retention: -1h}]}`),
			"spec.retentionByOutcome[0].retention", "should match"),
		Entry("an outcome without a retention", policy(`spec: {retentionByOutcome: [{phase: Failed, reason: Timeout}]}`),
			"spec.retentionByOutcome[0].retention", "Required value"),
		Entry("17 outcomes", policy(`spec: {phases: [Rejected, Failed, Cancelled], retentionByOutcome: `+outcomeRetentions(17)+`}`),
			"spec.retentionByOutcome", "at most 16 items"),
	)

	It("accepts a retention for every outcome arbiter sets, 16 entries", func() {
		u := policy(`spec: {strategy: Immediate, phases: [Rejected, Failed, Cancelled], retentionByOutcome: ` + outcomeRetentions(16) + `}`)
		Expect(create(u)).To(Succeed())
		var p arbiterv1alpha1.CleanupPolicy
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), &p)).To(Succeed())
		Expect(p.Spec.RetentionByOutcome).To(HaveLen(16))
	})

	It("accepts a minimal operation and fills in every default", func() {
		u := operation("")
		Expect(create(u)).To(Succeed())

		var op arbiterv1alpha1.ConflictResolutionOperation
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), &op)).To(Succeed())
		Expect(op.Spec.Priority).To(Equal(arbiterv1alpha1.PriorityNormal))
		Expect(op.Spec.Staging.Window).To(Equal(&metav1.Duration{Duration: 100 * time.Millisecond}))
		Expect(op.Spec.Staging.OnConflict).To(Equal(arbiterv1alpha1.ConflictPolicyReject))
		Expect(op.Spec.OCC.MaxRetries).To(HaveValue(BeEquivalentTo(10)))
		Expect(op.Spec.OCC.BaseDelay).To(Equal(&metav1.Duration{Duration: 5 * time.Millisecond}))
		Expect(op.Spec.OCC.BackoffFactor).To(Equal("1.5"))
		Expect(op.Spec.OCC.MaxDelay).To(Equal(&metav1.Duration{Duration: time.Second}))
		Expect(op.Spec.GracePeriod).To(Equal(&metav1.Duration{Duration: time.Second}))
		Expect(op.Spec.Timeout).To(Equal(&metav1.Duration{Duration: 30 * time.Second}))
		Expect(op.Spec.Targets).To(HaveLen(1))
		Expect(op.Spec.Targets[0].JSONPatch).To(HaveLen(1))
	})

	It("accepts every kind of mutation, maxRetries 0 and the bounds of each range", func() {
		u := operation(`
spec:
  priority: 10
  parentRef: {name: batch-7}
  params: {amount: 100, note: {nested: [1, 2]}}
  staging: {window: 10s, onConflict: Queue}
  occ: {maxRetries: 0, baseDelay: 1ms, backoffFactor: "10", maxDelay: 1ms}
  gracePeriod: 0s
  timeout: 24h
  targets:
  - {apiVersion: v1, kind: ConfigMap, name: settings, mergePatch: {data: {mode: blue}}}
  - apiVersion: bank.example.com/v1
    kind: Account
    name: alice
    expression: '[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]'
  - apiVersion: bank.example.com/v1
    kind: Account
    name: bob
    jsonPatch:
    - {op: test, path: /spec/frozen, value: false}
    - {op: test, path: /metadata/name, value: bob}
    - {op: copy, from: /metadata/name, path: /metadata/annotations/previous-name}
    - {op: copy, from: /spec/owner, path: /metadata/annotations/previous-owner}
    - {op: remove, path: /spec/frozen}
  - {apiVersion: v1, kind: ConfigMap, name: labels, mergePatch: {metadata: {labels: {tier: gold}, annotations: {note: kept}}}}
`)
		Expect(create(u)).To(Succeed())
	})

	It("accepts a minimal cleanup policy and fills in every default", func() {
		u := policy("")
		Expect(create(u)).To(Succeed())

		var p arbiterv1alpha1.CleanupPolicy
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), &p)).To(Succeed())
		Expect(p.Spec.Strategy).To(Equal(arbiterv1alpha1.CleanupDeferred))
		Expect(p.Spec.Phases).To(Equal([]arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"}))
		Expect(p.Spec.DryRun).To(BeFalse())
		Expect(p.Spec.MaxDeletionsPerSecond).To(BeEquivalentTo(200))
		Expect(p.Spec.Health.MaxZombies).To(HaveValue(BeEquivalentTo(1000)))
		Expect(p.Spec.Health.MaxZombieAge).To(Equal(&metav1.Duration{Duration: 24 * time.Hour}))
		Expect(p.Spec.Health.MaxFailureRatePercent).To(HaveValue(BeEquivalentTo(10)))
		Expect(p.Spec.Retention).To(BeNil(), "retention's default depends on the strategy and is applied by the controller")
	})

	Context("after an operation is created", func() {
		var op *arbiterv1alpha1.ConflictResolutionOperation

		BeforeEach(func() {
			u := operation("")
			Expect(create(u)).To(Succeed())
			op = &arbiterv1alpha1.ConflictResolutionOperation{}
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), op)).To(Succeed())
		})

		It("refuses a change to spec", func() {
			op.Spec.Priority = 9
			err := k8sClient.Update(ctx, op)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec: Invalid value"))
			Expect(err.Error()).To(ContainSubstring("spec is immutable"))
		})

		It("accepts the cancel annotation", func() {
			patch := client.MergeFrom(op.DeepCopy())
			op.Annotations = map[string]string{arbiterv1alpha1.CancelAnnotation: "true"}
			Expect(k8sClient.Patch(ctx, op, patch)).To(Succeed())
		})

		It("keeps status apart from spec: a status write goes through the status subresource only", func() {
			op.Status.Phase = arbiterv1alpha1.PhaseExecuting
			op.Status.Attempts = 1
			Expect(k8sClient.Status().Update(ctx, op)).To(Succeed())

			var got arbiterv1alpha1.ConflictResolutionOperation
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(op), &got)).To(Succeed())
			Expect(got.Status.Phase).To(Equal(arbiterv1alpha1.PhaseExecuting))

			// A main-resource update ignores status.
			got.Status.Phase = arbiterv1alpha1.PhaseSucceeded
			Expect(k8sClient.Update(ctx, &got)).To(Succeed())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(op), &got)).To(Succeed())
			Expect(got.Status.Phase).To(Equal(arbiterv1alpha1.PhaseExecuting))
		})

		It("refuses an unknown phase in status", func() {
			op.Status.Phase = "Done"
			err := k8sClient.Status().Update(ctx, op)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring("status.phase"))
		})
	})
})
