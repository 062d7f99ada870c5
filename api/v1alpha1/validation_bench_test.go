package v1alpha1

import (
	"context"
	"testing"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
)

// BenchmarkCRDRules measures what the CEL rules of the operation CRD cost
// the API server, with its own validator: on a create, and on each status
// write, where spec is unchanged but every rule still runs (CRD validation
// ratcheting drops errors on unchanged values, it does not skip rules).
// "without spec immutability" leaves out the `self == oldSelf` rule on spec,
// to show its share.
func BenchmarkCRDRules(b *testing.B) {
	op := &ConflictResolutionOperation{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: "ConflictResolutionOperation"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "storm", Name: "op-1-1", Generation: 1},
		Spec: ConflictResolutionOperationSpec{
			Function: "credit-account", Priority: 1, Timeout: &metav1.Duration{Duration: 30 * time.Second},
			GracePeriod: &metav1.Duration{Duration: time.Second},
			Staging:     StagingSpec{Window: &metav1.Duration{Duration: 100 * time.Millisecond}, OnConflict: ConflictPolicyReject},
			Params:      &apiextensionsv1.JSON{Raw: []byte(`{"amount": 1}`)},
			Targets: []Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "acct-1",
				Expression: `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`}},
			RequestedBy: &RequesterInfo{Username: "alice", Groups: []string{"system:authenticated", "team-a"}},
		},
	}
	created := toUnstructured(b, op)
	now := metav1.NowMicro()
	op.Status = ConflictResolutionOperationStatus{Phase: PhaseRejected, Reason: ReasonLostStaging, Winner: "op-1-5",
		Message: "Lost staging to op-1-5 among 5 operations on the same target", EffectivePriority: 1,
		StagedAt: &now, CompletedAt: &now, ObservedGeneration: 1,
		Conditions: []metav1.Condition{
			{Type: OperationStaged, Status: metav1.ConditionTrue, Reason: ReasonStaged, Message: "Staged with effective priority 1", LastTransitionTime: metav1.Now()},
			{Type: OperationRejected, Status: metav1.ConditionTrue, Reason: ReasonLostStaging, Message: "Lost staging", LastTransitionTime: metav1.Now()},
			{Type: OperationFinished, Status: metav1.ConditionTrue, Reason: string(PhaseRejected), Message: "Lost staging", LastTransitionTime: metav1.Now()},
		}}
	finished := toUnstructured(b, op)

	for _, c := range []struct {
		name           string
		old, new       map[string]any
		withoutOldSelf bool
	}{
		{"create", nil, created, false},
		{"status write", created, finished, false},
		{"status write without spec immutability", created, finished, true},
	} {
		s, v := crdValidator(b, c.withoutOldSelf)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if errs, _ := v.Validate(context.Background(), nil, s, c.new, c.old, celconfig.RuntimeCELCostBudget); len(errs) > 0 {
					b.Fatal(errs)
				}
			}
		})
	}
}

// crdValidator builds the API server's CEL validator for the operation CRD
// in config/crd/bases, optionally without the spec immutability rule.
func crdValidator(b *testing.B, withoutImmutability bool) (*schema.Structural, *cel.Validator) {
	v1 := operationSchema(b)
	if withoutImmutability {
		spec := v1.Properties["spec"]
		spec.XValidations = nil
		v1.Properties["spec"] = spec
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v1, &internal, nil); err != nil {
		b.Fatal(err)
	}
	s, err := schema.NewStructural(&internal)
	if err != nil {
		b.Fatal(err)
	}
	return s, cel.NewValidator(s, true, celconfig.PerCallLimit)
}

func toUnstructured(b *testing.B, op *ConflictResolutionOperation) map[string]any {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(op)
	if err != nil {
		b.Fatal(err)
	}
	return u
}
