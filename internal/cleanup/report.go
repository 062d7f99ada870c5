package cleanup

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// ReportInterval is how often a policy's report is refreshed even when
// nothing it governs changed.
const ReportInterval = 30 * time.Second

// Figures is what the cleanup controller remembers of a policy's removals
// that the cluster does not store.
type Figures struct {
	// Cleaned and Failed are the removals (or dry-run reports) and failed
	// removals since the status last recorded them.
	Cleaned, Failed int64
	// FailureRatePercent is over FailureWindow (see Outcomes).
	FailureRatePercent int32
	// Latency is from completedAt to gone; nil without samples.
	Latency *arbiterv1alpha1.CleanupLatency
}

// LatencyOf gives the p50 and p99 of the latencies, rounded for status, or
// nil when there are none.
func LatencyOf(l *Latencies) *arbiterv1alpha1.CleanupLatency {
	p50, ok := l.Percentile(50)
	if !ok {
		return nil
	}
	p99, _ := l.Percentile(99)
	return &arbiterv1alpha1.CleanupLatency{P50: &metav1.Duration{Duration: p50.Round(time.Millisecond)},
		P99: &metav1.Duration{Duration: p99.Round(time.Millisecond)}}
}

// Report is a policy's health report at one instant.
type Report struct {
	// Status is the policy's new status.
	Status arbiterv1alpha1.CleanupPolicyStatus
	// Changed: something but lastSweepTime changed, so Status is to be
	// written (with lastSweepTime now); otherwise it is left as it is.
	Changed bool
	// Refresh is when the report is due again at the latest: sooner than
	// ReportInterval when the oldest zombie is about to pass maxZombieAge,
	// so that Degraded is reported when it does.
	Refresh time.Duration
}

// PolicyReport reports on policy p of a namespace from the namespace's
// policies and finished operations and the figures only the controller
// has. A policy counts the zombies it governs (held ones too); it overlaps
// when an older policy governs some operation it selects.
func PolicyReport(p *arbiterv1alpha1.CleanupPolicy, policies []arbiterv1alpha1.CleanupPolicy,
	finished []arbiterv1alpha1.ConflictResolutionOperation, f Figures, now time.Time) Report {
	rep := Report{Refresh: ReportInterval}
	obs := Observation{FailureRatePercent: f.FailureRatePercent}
	overlappedBy := ""
	for i := range finished {
		op := &finished[i]
		gov := Governing(op, policies)
		if gov == nil {
			continue
		}
		mine := gov.Name == p.Name
		if mine && IsZombie(gov, op) {
			obs.Count(op, now)
		}
		if !mine && overlappedBy == "" && Selects(p, op) {
			overlappedBy = gov.Name
		}
	}

	s := *p.Status.DeepCopy()
	state, issues, reason := Health(p.Spec.Health, obs)
	s.Health, s.Issues = state, issues
	s.Zombies = int32(obs.Zombies)
	s.HeldZombies = int32(obs.Held())
	s.OldestZombieAgeSeconds = int64(obs.OldestZombieAge.Seconds())
	s.CleanedTotal += f.Cleaned
	s.CleanupFailuresTotal += f.Failed
	s.CleanupFailureRatePercent = obs.FailureRatePercent
	if f.Latency != nil {
		s.CleanupLatency = f.Latency
	}
	s.ObservedGeneration = p.Generation
	condition := func(condType string, status bool, reason, message string) {
		c := metav1.Condition{Type: condType, Status: metav1.ConditionFalse, Reason: reason, Message: message,
			ObservedGeneration: p.Generation, LastTransitionTime: metav1.NewTime(now)}
		if status {
			c.Status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&s.Conditions, c)
	}
	if _, err := selector(p); err != nil {
		// Selects reads such a selector as selecting nothing: say so
		// rather than govern nothing in silence.
		condition(arbiterv1alpha1.PolicyReady, false, arbiterv1alpha1.ReasonInvalidSelector,
			fmt.Sprintf("spec.selector: %v; the policy selects no operation", err))
	} else {
		condition(arbiterv1alpha1.PolicyReady, true, arbiterv1alpha1.ReasonEvaluated,
			fmt.Sprintf("Governs %d zombie(s) with the %s strategy", obs.Zombies, p.Spec.Strategy))
	}
	healthMsg := "Every health threshold is met"
	if len(issues) > 0 {
		healthMsg = fmt.Sprint(issues)
	}
	condition(arbiterv1alpha1.PolicyHealthy, state == arbiterv1alpha1.HealthHealthy, reason, healthMsg)
	if overlappedBy != "" {
		condition(arbiterv1alpha1.PolicyOverlapping, true, arbiterv1alpha1.ReasonOverlapsOlderPolicy,
			fmt.Sprintf("CleanupPolicy %s is older and governs some operations this policy selects", overlappedBy))
	} else {
		condition(arbiterv1alpha1.PolicyOverlapping, false, arbiterv1alpha1.ReasonNoOverlap, "No older policy selects the same operations")
	}
	// Written only when something but the sweep time changed.
	if rep.Changed = !equality.Semantic.DeepEqual(p.Status, s); rep.Changed {
		sweep := metav1.NewTime(now)
		s.LastSweepTime = &sweep
	}
	rep.Status = s

	if untilTooOld := MaxZombieAge(p.Spec.Health) - obs.OldestZombieAge; obs.Zombies > 0 && untilTooOld > 0 {
		rep.Refresh = min(rep.Refresh, untilTooOld+time.Second)
	}
	return rep
}
