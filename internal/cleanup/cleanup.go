// Package cleanup decides, without a cluster, which finished operations are
// zombies, which CleanupPolicy governs them, when each may be removed, and how
// healthy a namespace's cleanup is. Its inputs are objects and the current
// time; the cleanup controller does the reading and the deleting.
package cleanup

import (
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// Retention is how long zombies are kept when retentionByOutcome has no
// entry for their outcome: spec.retention, or the strategy's default
// (Deferred 30m, Lazy 1h, Immediate 0, which ignores spec.retention).
func Retention(p *arbiterv1alpha1.CleanupPolicy) time.Duration {
	if p.Spec.Strategy == arbiterv1alpha1.CleanupImmediate {
		return 0
	}
	if p.Spec.Retention != nil {
		return p.Spec.Retention.Duration
	}
	def := arbiterv1alpha1.DefaultDeferredRetention
	if p.Spec.Strategy == arbiterv1alpha1.CleanupLazy {
		def = arbiterv1alpha1.DefaultLazyRetention
	}
	d, _ := time.ParseDuration(def)
	return d
}

// OutcomeRetention is how long a zombie that ended in op's phase and reason
// is kept, and the retentionByOutcome entry that says so ("" when none
// does): the entry of its phase and reason, else that of its phase alone,
// else Retention. An entry applies under every strategy, Immediate too.
func OutcomeRetention(p *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation) (time.Duration, string) {
	phase := arbiterv1alpha1.ZombiePhase(op.Status.Phase)
	var byPhase *arbiterv1alpha1.OutcomeRetention
	for i := range p.Spec.RetentionByOutcome {
		e := &p.Spec.RetentionByOutcome[i]
		switch {
		case e.Phase != phase:
		case e.Reason == "":
			byPhase = e
		case string(e.Reason) == op.Status.Reason:
			return e.Retention.Duration, fmt.Sprintf("retentionByOutcome %s/%s", e.Phase, e.Reason)
		}
	}
	if byPhase != nil {
		return byPhase.Retention.Duration, fmt.Sprintf("retentionByOutcome %s", byPhase.Phase)
	}
	return Retention(p), ""
}

// CompletedAt is when an operation ended: status.completedAt, else its
// creation (an operation finished by an older arbiter without the stamp).
func CompletedAt(op *arbiterv1alpha1.ConflictResolutionOperation) time.Time {
	if op.Status.CompletedAt != nil {
		return op.Status.CompletedAt.Time
	}
	return op.CreationTimestamp.Time
}

// IsZombie reports whether the policy counts the operation as a zombie: it
// ended in one of the policy's phases.
func IsZombie(p *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation) bool {
	return op.Status.Phase.IsTerminal() && slices.Contains(p.Spec.Phases, arbiterv1alpha1.ZombiePhase(op.Status.Phase))
}

// Verdict is what a policy says about one operation at one instant.
type Verdict struct {
	// Zombie: it counts in the policy's health report.
	Zombie bool
	// Removable: the policy removes it, at or after At.
	Removable bool
	// At is when it becomes removable.
	At time.Time
	// OnlyWhenMet: the policy is Lazy; it is removed when arbiter next meets
	// its target, not on a timer.
	OnlyWhenMet bool
	// Why says which rule removes it, for events.
	Why string
	// Held, when set, says why it is never removed automatically; it still
	// counts as a zombie.
	Held string
}

// Due reports whether the verdict allows removal now (for Lazy: if met).
func (v Verdict) Due(now time.Time) bool { return v.Removable && !now.Before(v.At) }

// Hold is why an operation is held from cleanup, if it is.
type Hold int

const (
	// NotHeld means cleanup may remove it.
	NotHeld Hold = iota
	// HeldAwaitingAcknowledgement means it is Failed/RollbackFailed and not
	// annotated arbiter.dev/acknowledged=true; a human must check the
	// targets its message names. It takes precedence over a keep
	// annotation: keeping an operation does not say its targets were checked.
	HeldAwaitingAcknowledgement
	// HeldKept means it is annotated arbiter.dev/keep=true.
	HeldKept
)

// HoldOf says whether, and why, an operation must never be removed
// automatically, by any strategy, historyLimit or the default strategy.
func HoldOf(op *arbiterv1alpha1.ConflictResolutionOperation) Hold {
	switch {
	case op.Status.Phase == arbiterv1alpha1.PhaseFailed && op.Status.Reason == arbiterv1alpha1.ReasonRollbackFailed &&
		op.Annotations[arbiterv1alpha1.AcknowledgedAnnotation] != "true":
		return HeldAwaitingAcknowledgement
	case op.Annotations[arbiterv1alpha1.KeepAnnotation] == "true":
		return HeldKept
	}
	return NotHeld
}

// Held says why an operation must never be removed automatically (see
// HoldOf), or "" when it may be.
func Held(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	switch HoldOf(op) {
	case HeldAwaitingAcknowledgement:
		return "RollbackFailed, not " + arbiterv1alpha1.AcknowledgedAnnotation + "=true"
	case HeldKept:
		return arbiterv1alpha1.KeepAnnotation + "=true"
	}
	return ""
}

// Judge applies a policy to an operation. A held operation is judged as
// usual but never removable.
func Judge(p *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation) Verdict {
	v := judge(p, op)
	if held := Held(op); held != "" && (v.Zombie || v.Removable) {
		return Verdict{Zombie: v.Zombie, Held: held}
	}
	return v
}

func judge(p *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation) Verdict {
	if !op.Status.Phase.IsTerminal() {
		return Verdict{}
	}
	done := CompletedAt(op)
	lazy := p.Spec.Strategy == arbiterv1alpha1.CleanupLazy
	switch {
	case IsZombie(p, op):
		retention, entry := OutcomeRetention(p, op)
		why := fmt.Sprintf("%s zombie, %s strategy", op.Status.Phase, p.Spec.Strategy)
		switch {
		case entry != "":
			why += fmt.Sprintf(", %s %s", entry, retention)
		case retention > 0:
			why += fmt.Sprintf(", retention %s", retention)
		}
		return Verdict{Zombie: true, Removable: true, At: done.Add(retention), OnlyWhenMet: lazy, Why: why}
	case op.Status.Phase == arbiterv1alpha1.PhaseSucceeded && p.Spec.SucceededRetention != nil:
		return Verdict{Removable: true, At: done.Add(p.Spec.SucceededRetention.Duration), OnlyWhenMet: lazy,
			Why: fmt.Sprintf("Succeeded, succeededRetention %s", p.Spec.SucceededRetention.Duration)}
	}
	return Verdict{}
}

// OverHistory returns, oldest first, the operations of one target to remove
// now under the limiting policy's historyLimit. Only the zombies that policy
// governs count and go: another policy's zombies are its own business, and
// held ones (see Held) are neither counted nor removed.
func OverHistory(limiting *arbiterv1alpha1.CleanupPolicy, c *Candidates,
	onTarget []arbiterv1alpha1.ConflictResolutionOperation) []*arbiterv1alpha1.ConflictResolutionOperation {
	if limiting.Spec.HistoryLimit == nil {
		return nil
	}
	var zombies []*arbiterv1alpha1.ConflictResolutionOperation
	for i := range onTarget {
		z := &onTarget[i]
		if z.DeletionTimestamp.IsZero() && IsZombie(limiting, z) && Held(z) == "" && c.GovernedBy(limiting, z) {
			zombies = append(zombies, z)
		}
	}
	limit := int(*limiting.Spec.HistoryLimit)
	if len(zombies) <= limit {
		return nil
	}
	slices.SortFunc(zombies, func(a, b *arbiterv1alpha1.ConflictResolutionOperation) int {
		if c := CompletedAt(a).Compare(CompletedAt(b)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return zombies[:len(zombies)-limit]
}

// DefaultPolicyName names the operator-wide default policy in events and
// logs. No CleanupPolicy can have it: it is no DNS subdomain.
const DefaultPolicyName = "--default-cleanup-strategy"

// DefaultPolicy is the operator-wide default (--default-cleanup-strategy)
// in a namespace: it governs the operations no CleanupPolicy selects, with
// the strategy's default retention, Rejected and Failed as zombies and 200
// deletions a second. It is no object of the cluster and has no report.
func DefaultPolicy(namespace string, strategy arbiterv1alpha1.CleanupStrategy) *arbiterv1alpha1.CleanupPolicy {
	return &arbiterv1alpha1.CleanupPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: DefaultPolicyName},
		Spec: arbiterv1alpha1.CleanupPolicySpec{
			Strategy:              strategy,
			Phases:                []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"},
			MaxDeletionsPerSecond: 200,
		},
	}
}

// IsDefault reports whether p is the operator-wide default policy.
func IsDefault(p *arbiterv1alpha1.CleanupPolicy) bool { return p.Name == DefaultPolicyName }
