package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

func TestStatusTransitions(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	st := staged{priority: 7, at: at, note: "parentRef p lends no priority: it has finished (Succeeded)"}
	for _, tc := range []struct {
		name       string
		mark       func(*arbiterv1alpha1.ConflictResolutionOperation)
		phase      arbiterv1alpha1.OperationPhase
		reason     string
		winner     string
		condition  string
		terminal   bool
		stagedNote bool
	}{
		{name: "queued", mark: func(op *arbiterv1alpha1.ConflictResolutionOperation) { markQueued(op, st, "w") },
			phase: arbiterv1alpha1.PhaseQueued, reason: arbiterv1alpha1.ReasonQueued, winner: "w", stagedNote: true},
		{name: "executing", mark: func(op *arbiterv1alpha1.ConflictResolutionOperation) { markExecuting(op, st, 3, at) },
			phase: arbiterv1alpha1.PhaseExecuting, reason: arbiterv1alpha1.ReasonStaged, stagedNote: true},
		{name: "rejected", mark: func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			markRejected(op, st, "w")
			markFinished(op, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging, "lost", at)
		}, phase: arbiterv1alpha1.PhaseRejected, reason: arbiterv1alpha1.ReasonLostStaging, winner: "w",
			condition: arbiterv1alpha1.OperationRejected, terminal: true, stagedNote: true},
		{name: "cancelled", mark: func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			markFinished(op, arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.ReasonCancelled, "cancelled", at)
		}, phase: arbiterv1alpha1.PhaseCancelled, reason: arbiterv1alpha1.ReasonCancelled, terminal: true},
		{name: "failed", mark: func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			markFinished(op, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout, "late", at)
		}, phase: arbiterv1alpha1.PhaseFailed, reason: arbiterv1alpha1.ReasonTimeout, condition: arbiterv1alpha1.OperationFailed, terminal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Generation: 2}}
			tc.mark(op)
			s := op.Status
			if s.Phase != tc.phase || s.Reason != tc.reason || s.Winner != tc.winner {
				t.Fatalf("phase %s reason %s winner %q; want %s %s %q", s.Phase, s.Reason, s.Winner, tc.phase, tc.reason, tc.winner)
			}
			if tc.terminal != (s.CompletedAt != nil) || tc.terminal != (s.ObservedGeneration == 2) {
				t.Errorf("completedAt %v, observedGeneration %d for terminal=%v", s.CompletedAt, s.ObservedGeneration, tc.terminal)
			}
			if tc.condition != "" && !meta.IsStatusConditionTrue(s.Conditions, tc.condition) {
				t.Errorf("condition %s not True: %v", tc.condition, s.Conditions)
			}
			finished := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.OperationFinished)
			if tc.terminal != (finished != nil && finished.Status == metav1.ConditionTrue && finished.Reason == string(tc.phase)) {
				t.Errorf("Finished condition %+v for terminal=%v", finished, tc.terminal)
			}
			staged := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.OperationStaged)
			if tc.stagedNote {
				if staged == nil || staged.Message != "Staged with effective priority 7; "+st.note || !s.StagedAt.Time.Equal(at) || s.EffectivePriority != 7 {
					t.Errorf("staged condition %+v, stagedAt %v, priority %d", staged, s.StagedAt, s.EffectivePriority)
				}
			} else if staged != nil {
				t.Errorf("staged condition set on an operation never staged: %+v", staged)
			}
		})
	}
}

func TestPriorityIsLentOnlyByALiveParentOfTheSameRequester(t *testing.T) {
	by := func(name, uid string) *arbiterv1alpha1.RequesterInfo {
		return &arbiterv1alpha1.RequesterInfo{Username: name, UID: uid}
	}
	parent := func(who *arbiterv1alpha1.RequesterInfo, phase arbiterv1alpha1.OperationPhase) *arbiterv1alpha1.ConflictResolutionOperation {
		p := &arbiterv1alpha1.ConflictResolutionOperation{}
		p.Spec.RequestedBy, p.Status.Phase = who, phase
		return p
	}
	child := &arbiterv1alpha1.ConflictResolutionOperation{}
	child.Spec.RequestedBy = by("pat", "1")
	for _, tc := range []struct {
		name   string
		parent *arbiterv1alpha1.ConflictResolutionOperation
		want   string
	}{
		{"same requester, pending", parent(by("pat", "1"), ""), ""},
		{"same requester, executing", parent(by("pat", "1"), arbiterv1alpha1.PhaseExecuting), ""},
		{"same requester, finished", parent(by("pat", "1"), arbiterv1alpha1.PhaseSucceeded), "it has finished (Succeeded)"},
		{"another user", parent(by("sam", "2"), ""), "it was requested by someone else"},
		{"the same name, another account", parent(by("pat", "9"), ""), "it was requested by someone else"},
		{"no requester recorded", parent(nil, ""), "it was requested by someone else"},
	} {
		if got := whyNotLending(child, tc.parent); got != tc.want {
			t.Errorf("%s: whyNotLending = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestOnlyOutcomesAHumanMustSeeAreEvents(t *testing.T) {
	for _, tc := range []struct {
		phase  arbiterv1alpha1.OperationPhase
		reason string
		want   string // event type and reason, or "" for none
	}{
		{arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, ""},
		{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging, ""},
		{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonPreempted, "Normal Preempted"},
		{arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonForbidden, "Warning Failed"},
		{arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonRollbackFailed, "Warning Failed"},
		{arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.ReasonCancelled, "Normal Cancelled"},
	} {
		eventType, reason, ok := outcomeEvent(tc.phase, tc.reason)
		got := ""
		if ok {
			got = eventType + " " + reason
		}
		if got != tc.want {
			t.Errorf("%s/%s: event %q, want %q", tc.phase, tc.reason, got, tc.want)
		}
	}
}
