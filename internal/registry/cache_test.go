package registry

import (
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

func operationIn(phase arbiterv1alpha1.OperationPhase) *arbiterv1alpha1.ConflictResolutionOperation {
	now := metav1.NowMicro()
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Name: "op", Labels: map[string]string{"team": "a"},
			Annotations: map[string]string{lastApplied: "{...}", arbiterv1alpha1.CancelAnnotation: "true",
				arbiterv1alpha1.KeepAnnotation: "true", arbiterv1alpha1.AcknowledgedAnnotation: "true", "ballast": strings.Repeat("x", 200<<10)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
			Function: "credit", Priority: 7, Params: &apiextensionsv1.JSON{Raw: []byte(`{"amount": 1}`)},
			ParentRef:   &arbiterv1alpha1.OperationReference{Name: "parent"},
			RequestedBy: &arbiterv1alpha1.RequesterInfo{Username: "alice", UID: "42", Groups: []string{"tellers"}},
			Targets: []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm",
				Expression: `[JSONPatch{op: "add", path: "/data/x", value: "y"}]`}},
		},
		Status: arbiterv1alpha1.ConflictResolutionOperationStatus{Phase: phase, Reason: "R", Message: "long story",
			CompletedAt: &now, Conditions: []metav1.Condition{{Type: "Succeeded"}},
			Targets: []arbiterv1alpha1.TargetStatus{{Name: "cm"}}},
	}
}

// The requester's username is kept for cleanup's audit record.
func TestTrimFinishedKeepsWhatCleanupAndStagingRead(t *testing.T) {
	out, err := TrimFinished(operationIn(arbiterv1alpha1.PhaseRejected))
	if err != nil {
		t.Fatal(err)
	}
	op := out.(*arbiterv1alpha1.ConflictResolutionOperation)
	switch {
	case op.ManagedFields != nil, op.Spec.Params != nil, op.Spec.RequestedBy.UID != "", op.Spec.RequestedBy.Groups != nil,
		op.Spec.Targets[0].Expression != "",
		op.Status.Message != "", op.Status.Conditions != nil, op.Status.Targets != nil:
		t.Errorf("a finished operation keeps what only executing needs: %+v", op)
	case op.Annotations[lastApplied] != "":
		t.Error("the last-applied copy of the manifest is kept")
	case op.Annotations["ballast"] != "":
		t.Error("a 200 KiB annotation arbiter never reads is kept")
	case op.Name != "op", op.Labels["team"] != "a", op.Annotations[arbiterv1alpha1.CancelAnnotation] != "true",
		op.Annotations[arbiterv1alpha1.KeepAnnotation] != "true", op.Annotations[arbiterv1alpha1.AcknowledgedAnnotation] != "true",
		op.Spec.Priority != 7, op.Spec.ParentRef == nil, op.Spec.Function != "credit", op.Spec.RequestedBy.Username != "alice",
		op.Spec.Targets[0].Name != "cm", op.Spec.Targets[0].Kind != "ConfigMap", op.Spec.Targets[0].APIVersion != "v1",
		op.Status.Phase != arbiterv1alpha1.PhaseRejected, op.Status.Reason != "R", op.Status.CompletedAt == nil:
		t.Errorf("a finished operation lost what cleanup or staging read: %+v", op)
	}
}

func TestTrimFinishedLeavesLiveOperationsWhole(t *testing.T) {
	for _, phase := range []arbiterv1alpha1.OperationPhase{"", arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued, arbiterv1alpha1.PhaseExecuting} {
		out, err := TrimFinished(operationIn(phase))
		if err != nil {
			t.Fatal(err)
		}
		op := out.(*arbiterv1alpha1.ConflictResolutionOperation)
		if op.ManagedFields != nil {
			t.Errorf("%q: managedFields kept", phase)
		}
		if op.Spec.Params == nil || op.Spec.Targets[0].Expression == "" || op.Spec.RequestedBy == nil || op.Annotations[lastApplied] == "" {
			t.Errorf("%q: an operation arbiter may still execute was trimmed: %+v", phase, op)
		}
	}
}
