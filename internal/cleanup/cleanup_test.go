package cleanup

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func policy(name string, created time.Duration, mutate func(*arbiterv1alpha1.CleanupPolicySpec)) arbiterv1alpha1.CleanupPolicy {
	p := arbiterv1alpha1.CleanupPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bank", CreationTimestamp: metav1.NewTime(t0.Add(created))},
		Spec: arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupDeferred,
			Phases: []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"}},
	}
	if mutate != nil {
		mutate(&p.Spec)
	}
	return p
}

func finished(name string, phase arbiterv1alpha1.OperationPhase, completed time.Duration, labels map[string]string) *arbiterv1alpha1.ConflictResolutionOperation {
	at := metav1.NewMicroTime(t0.Add(completed))
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bank", Labels: labels},
		Status:     arbiterv1alpha1.ConflictResolutionOperationStatus{Phase: phase, CompletedAt: &at},
	}
}

func annotated(op *arbiterv1alpha1.ConflictResolutionOperation, key, value string) *arbiterv1alpha1.ConflictResolutionOperation {
	if op.Annotations == nil {
		op.Annotations = map[string]string{}
	}
	op.Annotations[key] = value
	return op
}

func withReason(op *arbiterv1alpha1.ConflictResolutionOperation, reason string) *arbiterv1alpha1.ConflictResolutionOperation {
	op.Status.Reason = reason
	return op
}

func TestJudge(t *testing.T) {
	minutes := func(m int) *metav1.Duration { return &metav1.Duration{Duration: time.Duration(m) * time.Minute} }
	tests := []struct {
		name   string
		policy arbiterv1alpha1.CleanupPolicy
		op     *arbiterv1alpha1.ConflictResolutionOperation
		want   Verdict
	}{
		{"Immediate removes a rejected operation at once",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			finished("op", arbiterv1alpha1.PhaseRejected, 0, nil),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Rejected zombie, Immediate strategy"}},
		{"Deferred removes a failed one when its retention expires",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Retention = minutes(5) }),
			finished("op", arbiterv1alpha1.PhaseFailed, 0, nil),
			Verdict{Zombie: true, Removable: true, At: t0.Add(5 * time.Minute), Why: "Failed zombie, Deferred strategy, retention 5m0s"}},
		{"Deferred defaults its retention to 30m",
			policy("p", 0, nil), finished("op", arbiterv1alpha1.PhaseRejected, 0, nil),
			Verdict{Zombie: true, Removable: true, At: t0.Add(30 * time.Minute), Why: "Rejected zombie, Deferred strategy, retention 30m0s"}},
		{"Lazy waits to be met, and defaults its retention to 1h",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupLazy }),
			finished("op", arbiterv1alpha1.PhaseRejected, 0, nil),
			Verdict{Zombie: true, Removable: true, At: t0.Add(time.Hour), OnlyWhenMet: true, Why: "Rejected zombie, Lazy strategy, retention 1h0m0s"}},
		{"a phase the policy does not list is kept",
			policy("p", 0, nil), finished("op", arbiterv1alpha1.PhaseCancelled, 0, nil), Verdict{}},
		{"Cancelled is a zombie when listed",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
				s.Phases = []arbiterv1alpha1.ZombiePhase{"Cancelled"}
				s.Strategy = arbiterv1alpha1.CleanupImmediate
			}),
			finished("op", arbiterv1alpha1.PhaseCancelled, 0, nil),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Cancelled zombie, Immediate strategy"}},
		{"Succeeded is kept without succeededRetention",
			policy("p", 0, nil), finished("op", arbiterv1alpha1.PhaseSucceeded, 0, nil), Verdict{}},
		{"Succeeded is removed after succeededRetention, and is no zombie",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.SucceededRetention = minutes(60) }),
			finished("op", arbiterv1alpha1.PhaseSucceeded, 0, nil),
			Verdict{Removable: true, At: t0.Add(time.Hour), Why: "Succeeded, succeededRetention 1h0m0s"}},
		{"keep holds a zombie: it still counts, it is never removed",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			annotated(finished("op", arbiterv1alpha1.PhaseRejected, 0, nil), arbiterv1alpha1.KeepAnnotation, "true"),
			Verdict{Zombie: true, Held: "arbiter.dev/keep=true"}},
		{"keep holds a Lazy zombie too",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupLazy }),
			annotated(finished("op", arbiterv1alpha1.PhaseFailed, 0, nil), arbiterv1alpha1.KeepAnnotation, "true"),
			Verdict{Zombie: true, Held: "arbiter.dev/keep=true"}},
		{"keep holds a Succeeded operation past succeededRetention",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.SucceededRetention = minutes(1) }),
			annotated(finished("op", arbiterv1alpha1.PhaseSucceeded, 0, nil), arbiterv1alpha1.KeepAnnotation, "true"),
			Verdict{Held: "arbiter.dev/keep=true"}},
		{"keep=false holds nothing",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			annotated(finished("op", arbiterv1alpha1.PhaseRejected, 0, nil), arbiterv1alpha1.KeepAnnotation, "false"),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Rejected zombie, Immediate strategy"}},
		{"RollbackFailed is held until acknowledged",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			withReason(finished("op", arbiterv1alpha1.PhaseFailed, 0, nil), arbiterv1alpha1.ReasonRollbackFailed),
			Verdict{Zombie: true, Held: "RollbackFailed, not arbiter.dev/acknowledged=true"}},
		{"RollbackFailed acknowledged is removed as any Failed zombie",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			annotated(withReason(finished("op", arbiterv1alpha1.PhaseFailed, 0, nil), arbiterv1alpha1.ReasonRollbackFailed),
				arbiterv1alpha1.AcknowledgedAnnotation, "true"),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Failed zombie, Immediate strategy"}},
		{"RolledBack needs no acknowledgement",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			withReason(finished("op", arbiterv1alpha1.PhaseFailed, 0, nil), arbiterv1alpha1.ReasonRolledBack),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Failed zombie, Immediate strategy"}},
		{"a held operation the policy does not govern stays no zombie",
			policy("p", 0, nil),
			annotated(finished("op", arbiterv1alpha1.PhaseCancelled, 0, nil), arbiterv1alpha1.KeepAnnotation, "true"),
			Verdict{}},
		{"a live operation is never judged",
			policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.Strategy = arbiterv1alpha1.CleanupImmediate }),
			finished("op", arbiterv1alpha1.PhaseQueued, 0, nil), Verdict{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Judge(&tt.policy, tt.op); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Judge = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The most specific retentionByOutcome entry wins: phase and reason, then
// phase, then spec.retention, then the strategy's default; under every
// strategy, Immediate included.
func TestJudgeRetentionByOutcome(t *testing.T) {
	byOutcome := func(strategy arbiterv1alpha1.CleanupStrategy, retention *metav1.Duration) arbiterv1alpha1.CleanupPolicy {
		return policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy, s.Retention = strategy, retention
			s.Phases = []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed", "Cancelled"}
			s.RetentionByOutcome = []arbiterv1alpha1.OutcomeRetention{
				// The phase's entry listed after a reason's: order does not matter.
				{Phase: "Failed", Reason: arbiterv1alpha1.ReasonTimeout, Retention: metav1.Duration{Duration: time.Hour}},
				{Phase: "Failed", Retention: metav1.Duration{Duration: 24 * time.Hour}},
				{Phase: "Rejected", Reason: arbiterv1alpha1.ReasonPreempted, Retention: metav1.Duration{Duration: 10 * time.Minute}},
			}
		})
	}
	twoHours := &metav1.Duration{Duration: 2 * time.Hour}
	outcome := func(phase arbiterv1alpha1.OperationPhase, reason string) *arbiterv1alpha1.ConflictResolutionOperation {
		return withReason(finished("op", phase, 0, nil), reason)
	}
	tests := []struct {
		name   string
		policy arbiterv1alpha1.CleanupPolicy
		op     *arbiterv1alpha1.ConflictResolutionOperation
		want   Verdict
	}{
		{"Deferred: phase and reason", byOutcome(arbiterv1alpha1.CleanupDeferred, twoHours), outcome(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout),
			Verdict{Zombie: true, Removable: true, At: t0.Add(time.Hour), Why: "Failed zombie, Deferred strategy, retentionByOutcome Failed/Timeout 1h0m0s"}},
		{"Deferred: phase, for a reason without an entry", byOutcome(arbiterv1alpha1.CleanupDeferred, twoHours), outcome(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonForbidden),
			Verdict{Zombie: true, Removable: true, At: t0.Add(24 * time.Hour), Why: "Failed zombie, Deferred strategy, retentionByOutcome Failed 24h0m0s"}},
		{"Deferred: spec.retention, for a phase with only another reason's entry", byOutcome(arbiterv1alpha1.CleanupDeferred, twoHours), outcome(arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging),
			Verdict{Zombie: true, Removable: true, At: t0.Add(2 * time.Hour), Why: "Rejected zombie, Deferred strategy, retention 2h0m0s"}},
		{"Deferred: the strategy's default without spec.retention", byOutcome(arbiterv1alpha1.CleanupDeferred, nil), outcome(arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.ReasonCancelled),
			Verdict{Zombie: true, Removable: true, At: t0.Add(30 * time.Minute), Why: "Cancelled zombie, Deferred strategy, retention 30m0s"}},
		{"Lazy: phase and reason, when met", byOutcome(arbiterv1alpha1.CleanupLazy, nil), outcome(arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonPreempted),
			Verdict{Zombie: true, Removable: true, At: t0.Add(10 * time.Minute), OnlyWhenMet: true, Why: "Rejected zombie, Lazy strategy, retentionByOutcome Rejected/Preempted 10m0s"}},
		{"Lazy: phase", byOutcome(arbiterv1alpha1.CleanupLazy, nil), outcome(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonRolledBack),
			Verdict{Zombie: true, Removable: true, At: t0.Add(24 * time.Hour), OnlyWhenMet: true, Why: "Failed zombie, Lazy strategy, retentionByOutcome Failed 24h0m0s"}},
		{"Lazy: the strategy's default", byOutcome(arbiterv1alpha1.CleanupLazy, nil), outcome(arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging),
			Verdict{Zombie: true, Removable: true, At: t0.Add(time.Hour), OnlyWhenMet: true, Why: "Rejected zombie, Lazy strategy, retention 1h0m0s"}},
		{"Immediate: an entry makes its outcome wait", byOutcome(arbiterv1alpha1.CleanupImmediate, twoHours), outcome(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout),
			Verdict{Zombie: true, Removable: true, At: t0.Add(time.Hour), Why: "Failed zombie, Immediate strategy, retentionByOutcome Failed/Timeout 1h0m0s"}},
		{"Immediate: a phase entry too", byOutcome(arbiterv1alpha1.CleanupImmediate, twoHours), outcome(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonInvalidMutation),
			Verdict{Zombie: true, Removable: true, At: t0.Add(24 * time.Hour), Why: "Failed zombie, Immediate strategy, retentionByOutcome Failed 24h0m0s"}},
		{"Immediate: spec.retention is still ignored", byOutcome(arbiterv1alpha1.CleanupImmediate, twoHours), outcome(arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Rejected zombie, Immediate strategy"}},
		{"a zero entry removes at once", policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.RetentionByOutcome = []arbiterv1alpha1.OutcomeRetention{{Phase: "Rejected"}}
		}), outcome(arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging),
			Verdict{Zombie: true, Removable: true, At: t0, Why: "Rejected zombie, Deferred strategy, retentionByOutcome Rejected 0s"}},
		{"an entry never makes a kept zombie removable", byOutcome(arbiterv1alpha1.CleanupDeferred, nil),
			annotated(outcome(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout), arbiterv1alpha1.KeepAnnotation, "true"),
			Verdict{Zombie: true, Held: "arbiter.dev/keep=true"}},
		{"an entry for a phase the policy does not list makes no zombie", policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.RetentionByOutcome = []arbiterv1alpha1.OutcomeRetention{{Phase: "Cancelled", Retention: metav1.Duration{Duration: time.Minute}}}
		}), outcome(arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.ReasonCancelled), Verdict{}},
		{"Succeeded is untouched by the entries", byOutcome(arbiterv1alpha1.CleanupDeferred, nil), outcome(arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied), Verdict{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Judge(&tt.policy, tt.op); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Judge = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHoldOf(t *testing.T) {
	rollbackFailed := withReason(finished("op", arbiterv1alpha1.PhaseFailed, 0, nil), arbiterv1alpha1.ReasonRollbackFailed)
	tests := []struct {
		name string
		op   *arbiterv1alpha1.ConflictResolutionOperation
		want Hold
		held string
	}{
		{"a plain zombie", finished("op", arbiterv1alpha1.PhaseRejected, 0, nil), NotHeld, ""},
		{"kept", annotated(finished("op", arbiterv1alpha1.PhaseRejected, 0, nil), arbiterv1alpha1.KeepAnnotation, "true"), HeldKept, "arbiter.dev/keep=true"},
		{"RollbackFailed", rollbackFailed.DeepCopy(), HeldAwaitingAcknowledgement, "RollbackFailed, not arbiter.dev/acknowledged=true"},
		{"RollbackFailed and kept still awaits acknowledgement", annotated(rollbackFailed.DeepCopy(), arbiterv1alpha1.KeepAnnotation, "true"),
			HeldAwaitingAcknowledgement, "RollbackFailed, not arbiter.dev/acknowledged=true"},
		{"RollbackFailed acknowledged and kept is kept", annotated(annotated(rollbackFailed.DeepCopy(), arbiterv1alpha1.AcknowledgedAnnotation, "true"),
			arbiterv1alpha1.KeepAnnotation, "true"), HeldKept, "arbiter.dev/keep=true"},
		{"RollbackFailed acknowledged", annotated(rollbackFailed.DeepCopy(), arbiterv1alpha1.AcknowledgedAnnotation, "true"), NotHeld, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, held := HoldOf(tt.op), Held(tt.op); got != tt.want || held != tt.held {
				t.Errorf("HoldOf = %d, Held = %q; want %d, %q", got, held, tt.want, tt.held)
			}
		})
	}
}

func TestGoverningIsTheOldestSelectingPolicy(t *testing.T) {
	audit := map[string]string{"team": "audit"}
	policies := []arbiterv1alpha1.CleanupPolicy{
		policy("newer", time.Hour, nil),
		policy("b-oldest", 0, nil),
		policy("a-oldest", 0, nil),
		policy("audit-only", -time.Hour, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Selector = &metav1.LabelSelector{MatchLabels: audit}
		}),
	}
	tests := []struct {
		name string
		op   *arbiterv1alpha1.ConflictResolutionOperation
		want string
	}{
		{"ties on age go to the lowest name", finished("op", arbiterv1alpha1.PhaseRejected, 0, nil), "a-oldest"},
		{"a selector narrows a policy", finished("op", arbiterv1alpha1.PhaseRejected, 0, audit), "audit-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewCandidates("bank", nil, policies, nil, nil).Governing(tt.op); got == nil || got.Name != tt.want {
				t.Errorf("Governing = %v, want %s", got, tt.want)
			}
		})
	}
	other := finished("op", arbiterv1alpha1.PhaseRejected, 0, nil)
	other.Namespace = "elsewhere"
	if got := NewCandidates("bank", nil, policies, nil, nil).Governing(other); got != nil {
		t.Errorf("a policy governed an operation of another namespace: %s", got.Name)
	}
}

func TestOverHistoryRemovesTheOldestBeyondTheLimit(t *testing.T) {
	p := policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.HistoryLimit = ptr.To[int32](2) })
	policies := []arbiterv1alpha1.CleanupPolicy{p}
	onTarget := []arbiterv1alpha1.ConflictResolutionOperation{
		*finished("c", arbiterv1alpha1.PhaseRejected, 3*time.Second, nil),
		*finished("a", arbiterv1alpha1.PhaseRejected, time.Second, nil),
		*finished("d", arbiterv1alpha1.PhaseFailed, 4*time.Second, nil),
		*finished("b", arbiterv1alpha1.PhaseRejected, 2*time.Second, nil),
	}
	if got := names(OverHistory(&p, NewCandidates("bank", nil, policies, nil, nil), onTarget)); got != "[a b]" {
		t.Errorf("OverHistory = %v, want [a b]", got)
	}
	p.Spec.HistoryLimit = nil
	if len(OverHistory(&p, NewCandidates("bank", nil, policies, nil, nil), onTarget)) != 0 {
		t.Error("OverHistory removed zombies without a historyLimit")
	}
}

func names(ops []*arbiterv1alpha1.ConflictResolutionOperation) string {
	out := []string{}
	for _, op := range ops {
		out = append(out, op.Name)
	}
	return fmt.Sprint(out)
}

// historyLimit counts and removes only the zombies its policy governs: the
// reproduced bug had a newer catch-all policy with historyLimit 1 delete the
// zombies an older policy with a selector keeps for an hour.
func TestOverHistoryActsOnlyOnWhatItsPolicyGoverns(t *testing.T) {
	audit := map[string]string{"team": "audit"}
	older := policy("audit", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Selector = &metav1.LabelSelector{MatchLabels: audit}
		s.Retention = &metav1.Duration{Duration: time.Hour}
	})
	catchAll := policy("history", time.Hour, func(s *arbiterv1alpha1.CleanupPolicySpec) { s.HistoryLimit = ptr.To[int32](1) })
	policies := []arbiterv1alpha1.CleanupPolicy{catchAll, older}
	deleting := finished("deleting", arbiterv1alpha1.PhaseRejected, 0, nil)
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	kept := finished("kept", arbiterv1alpha1.PhaseRejected, 0, nil)
	kept.Annotations = map[string]string{arbiterv1alpha1.KeepAnnotation: "true"}
	stuck := finished("stuck", arbiterv1alpha1.PhaseFailed, 0, nil)
	stuck.Status.Reason = arbiterv1alpha1.ReasonRollbackFailed

	tests := []struct {
		name     string
		onTarget []*arbiterv1alpha1.ConflictResolutionOperation
		want     string
	}{
		{"another policy's zombies neither count nor go", []*arbiterv1alpha1.ConflictResolutionOperation{
			finished("audit-1", arbiterv1alpha1.PhaseRejected, 1*time.Second, audit),
			finished("audit-2", arbiterv1alpha1.PhaseRejected, 2*time.Second, audit),
			finished("audit-3", arbiterv1alpha1.PhaseRejected, 3*time.Second, audit),
			finished("audit-4", arbiterv1alpha1.PhaseRejected, 4*time.Second, audit),
			finished("mine-1", arbiterv1alpha1.PhaseRejected, 5*time.Second, nil),
			finished("mine-2", arbiterv1alpha1.PhaseRejected, 6*time.Second, nil),
		}, "[mine-1]"},
		{"within the limit once another policy's are left out", []*arbiterv1alpha1.ConflictResolutionOperation{
			finished("audit-1", arbiterv1alpha1.PhaseRejected, 1*time.Second, audit),
			finished("audit-2", arbiterv1alpha1.PhaseRejected, 2*time.Second, audit),
			finished("mine-1", arbiterv1alpha1.PhaseRejected, 3*time.Second, nil),
		}, "[]"},
		{"held, deleting, live and succeeded operations neither count nor go", []*arbiterv1alpha1.ConflictResolutionOperation{
			kept, stuck, deleting,
			finished("live", arbiterv1alpha1.PhaseQueued, 0, nil),
			finished("succeeded", arbiterv1alpha1.PhaseSucceeded, 0, nil),
			finished("mine-1", arbiterv1alpha1.PhaseRejected, 5*time.Second, nil),
		}, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var onTarget []arbiterv1alpha1.ConflictResolutionOperation
			for _, op := range tt.onTarget {
				onTarget = append(onTarget, *op)
			}
			if got := names(OverHistory(&catchAll, NewCandidates("bank", nil, policies, nil, nil), onTarget)); got != tt.want {
				t.Errorf("OverHistory = %v, want %s", got, tt.want)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	th := arbiterv1alpha1.HealthThresholds{MaxZombies: ptr.To[int32](10), MaxZombieAge: &metav1.Duration{Duration: time.Hour}, MaxFailureRatePercent: ptr.To[int32](10)}
	tests := []struct {
		name   string
		obs    Observation
		state  arbiterv1alpha1.HealthState
		reason string
		issues string
	}{
		{"healthy", Observation{Zombies: 10, OldestZombieAge: time.Hour, FailureRatePercent: 10},
			arbiterv1alpha1.HealthHealthy, arbiterv1alpha1.ReasonThresholdsMet, "[]"},
		{"too many zombies", Observation{Zombies: 11},
			arbiterv1alpha1.HealthDegraded, arbiterv1alpha1.ReasonTooManyZombies, "[High zombie count: 11 (threshold 10)]"},
		{"a zombie too old", Observation{OldestZombieAge: 2 * time.Hour},
			arbiterv1alpha1.HealthDegraded, arbiterv1alpha1.ReasonZombieTooOld, "[Oldest zombie is 2h0m0s old (threshold 1h0m0s)]"},
		{"failing cleanups", Observation{Zombies: 11, FailureRatePercent: 50},
			arbiterv1alpha1.HealthUnhealthy, arbiterv1alpha1.ReasonCleanupFailing,
			"[High zombie count: 11 (threshold 10) Cleanup failure rate 50% over the last 15m0s (threshold 10%)]"},
		{"kept zombies alone leave it Healthy, and are listed", Observation{Zombies: 3, Kept: 2},
			arbiterv1alpha1.HealthHealthy, arbiterv1alpha1.ReasonThresholdsMet,
			"[2 zombie(s) held from cleanup: 2 arbiter.dev/keep=true]"},
		{"a RollbackFailed zombie awaiting acknowledgement makes it Degraded", Observation{Zombies: 2, Kept: 1, AwaitingAcknowledgement: 1},
			arbiterv1alpha1.HealthDegraded, arbiterv1alpha1.ReasonAwaitingAcknowledgement,
			"[2 zombie(s) held from cleanup: 1 Failed/RollbackFailed awaiting arbiter.dev/acknowledged=true, 1 arbiter.dev/keep=true]"},
		{"too many zombies is the first reason, the held ones still listed", Observation{Zombies: 11, AwaitingAcknowledgement: 1},
			arbiterv1alpha1.HealthDegraded, arbiterv1alpha1.ReasonTooManyZombies,
			"[High zombie count: 11 (threshold 10) 1 zombie(s) held from cleanup: 1 Failed/RollbackFailed awaiting arbiter.dev/acknowledged=true]"},
		{"failing cleanups outrank a hold", Observation{Zombies: 1, AwaitingAcknowledgement: 1, FailureRatePercent: 50},
			arbiterv1alpha1.HealthUnhealthy, arbiterv1alpha1.ReasonCleanupFailing,
			"[1 zombie(s) held from cleanup: 1 Failed/RollbackFailed awaiting arbiter.dev/acknowledged=true Cleanup failure rate 50% over the last 15m0s (threshold 10%)]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, issues, reason := Health(th, tt.obs)
			if state != tt.state || reason != tt.reason || fmt.Sprint(issues) != tt.issues {
				t.Errorf("Health = %s %s %v, want %s %s %s", state, reason, issues, tt.state, tt.reason, tt.issues)
			}
		})
	}
}

func TestObservationCountsHolds(t *testing.T) {
	rollbackFailed := func(name string) *arbiterv1alpha1.ConflictResolutionOperation {
		return withReason(finished(name, arbiterv1alpha1.PhaseFailed, 0, nil), arbiterv1alpha1.ReasonRollbackFailed)
	}
	var o Observation
	for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{
		finished("plain", arbiterv1alpha1.PhaseRejected, -time.Hour, nil),
		annotated(finished("kept", arbiterv1alpha1.PhaseRejected, 0, nil), arbiterv1alpha1.KeepAnnotation, "true"),
		rollbackFailed("unacknowledged"),
		// Kept does not say its targets were checked: it still awaits acknowledgement.
		annotated(rollbackFailed("kept-unacknowledged"), arbiterv1alpha1.KeepAnnotation, "true"),
		annotated(rollbackFailed("acknowledged"), arbiterv1alpha1.AcknowledgedAnnotation, "true"),
	} {
		o.Count(op, t0.Add(time.Hour))
	}
	if o.Zombies != 5 || o.Kept != 1 || o.AwaitingAcknowledgement != 2 || o.Held() != 3 || o.OldestZombieAge != 2*time.Hour {
		t.Errorf("observation %+v, want 5 zombies, 1 kept, 2 awaiting acknowledgement, the oldest 2h", o)
	}
}

func TestOutcomesCountOnlyTheLastFifteenMinutes(t *testing.T) {
	var o Outcomes
	o.Add(t0, true)
	o.Add(t0.Add(time.Minute), true)
	o.Add(t0.Add(10*time.Minute), false)
	o.Add(t0.Add(11*time.Minute), false)
	if rate, n := o.FailureRatePercent(t0.Add(12 * time.Minute)); rate != 50 || n != 4 {
		t.Errorf("rate = %d%% of %d, want 50%% of 4", rate, n)
	}
	if rate, n := o.FailureRatePercent(t0.Add(16*time.Minute + time.Second)); rate != 0 || n != 2 {
		t.Errorf("after the window: rate = %d%% of %d, want 0%% of 2", rate, n)
	}
}

// A policy whose report is never read (the operator-wide default) adds
// outcomes without asking for the rate: they must not pile up.
func TestOutcomesForgetThePastWithoutBeingRead(t *testing.T) {
	var o Outcomes
	for i := range 10_000 {
		o.Add(t0.Add(time.Duration(i)*time.Second), false)
	}
	if kept := len(o.at); kept > int(FailureWindow/time.Second)+1 {
		t.Errorf("%d outcomes kept over %s, want at most one per second of the window", kept, FailureWindow)
	}
}

func TestLatencyPercentiles(t *testing.T) {
	var l Latencies
	if _, ok := l.Percentile(50); ok {
		t.Error("a percentile of nothing")
	}
	for i := 1; i <= 100; i++ {
		l.Add(time.Duration(i) * time.Millisecond)
	}
	p50, _ := l.Percentile(50)
	p99, _ := l.Percentile(99)
	if p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("p50 %s p99 %s, want 50ms 99ms", p50, p99)
	}
}
