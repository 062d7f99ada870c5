package controllers

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// liveOperation is an operation as the manager holds it while executing:
// spec, a last-applied copy of the manifest, and a staged status.
func liveOperation() *arbiterv1alpha1.ConflictResolutionOperation {
	now := metav1.NowMicro()
	op := &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bank", Name: "credit-1", ResourceVersion: "42", Generation: 1,
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 2048)}},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "credit", Priority: 5,
			Params:      &apiextensionsv1.JSON{Raw: []byte(`{"amount": 1}`)},
			RequestedBy: &arbiterv1alpha1.RequesterInfo{Username: "alice", UID: "1", Groups: []string{"tellers", "system:authenticated"}},
			Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "acct-1",
				Expression: `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`}}},
		Status: arbiterv1alpha1.ConflictResolutionOperationStatus{Phase: arbiterv1alpha1.PhaseExecuting, Reason: "Won",
			Message: "Won staging", Winner: "someone", StagedAt: &now, StartedAt: &now, EffectivePriority: 5,
			Conditions: []metav1.Condition{{Type: arbiterv1alpha1.OperationStaged, Status: metav1.ConditionTrue, Reason: "Staged"}}},
	}
	return op
}

// succeed is a status transition that sets, changes and clears fields.
func succeed(op *arbiterv1alpha1.ConflictResolutionOperation) {
	now := metav1.NowMicro()
	op.Status.Phase, op.Status.Reason, op.Status.Message = arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, "Applied"
	op.Status.Winner, op.Status.StartedAt, op.Status.CompletedAt = "", nil, &now
	op.Status.Targets = []arbiterv1alpha1.TargetStatus{{Name: "acct-1", Applied: true}}
	op.Status.Conditions = append(op.Status.Conditions, metav1.Condition{Type: arbiterv1alpha1.OperationSucceeded, Status: metav1.ConditionTrue, Reason: "Applied"})
}

// The status patch, applied to the stored operation, gives what a patch
// of the whole object would: the new status, fields cleared included, and
// the resourceVersion it is conditional on.
func TestStatusPatchIsTheWholeObjectsPatchOfStatus(t *testing.T) {
	op := liveOperation()
	orig := op.DeepCopy()
	succeed(op)
	patch, err := statusPatch(&orig.Status, op)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := json.Marshal(orig)
	patched, err := jsonpatch.MergePatch(stored, patch)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}).Data(op)
	if err != nil {
		t.Fatal(err)
	}
	want, err := jsonpatch.MergePatch(stored, whole)
	if err != nil {
		t.Fatal(err)
	}
	var got, wanted map[string]any
	_ = json.Unmarshal(patched, &got)
	_ = json.Unmarshal(want, &wanted)
	if !reflect.DeepEqual(got, wanted) {
		t.Fatalf("patched:\n%s\nwant:\n%s", patched, want)
	}
	if s := got["status"].(map[string]any); s["winner"] != nil || s["startedAt"] != nil {
		t.Fatalf("cleared fields kept: %v", s)
	}
	if rv := got["metadata"].(map[string]any)["resourceVersion"]; rv != "42" {
		t.Fatalf("resourceVersion %v, want the one the patch is conditional on", rv)
	}
}

func BenchmarkStatusPatch(b *testing.B) {
	op := liveOperation()
	orig := op.DeepCopy()
	succeed(op)
	b.Run("status", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := statusPatch(&orig.Status, op); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole object", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}).Data(op); err != nil {
				b.Fatal(err)
			}
		}
	})
}
