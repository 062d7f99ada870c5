package cleanup

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// ReportInterval is how often a policy's report is refreshed even when
// nothing it governs changed.
const ReportInterval = 30 * time.Second

// Figures is what the cleanup controller remembers of a policy's removals
// that the cluster does not store.
type Figures struct {
	// Removed, Reported and Failed are the removals, the dry-run reports
	// and the failed removals since the status last recorded them;
	// cleanedTotal counts the first two.
	Removed, Reported, Failed int64
	// FailureRatePercent is over FailureWindow (see Outcomes).
	FailureRatePercent int32
	// NamespaceFailureRatePercent is a ClusterCleanupPolicy's failure rate
	// in each namespace it attempted deletions in over FailureWindow.
	NamespaceFailureRatePercent map[string]int32
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

// Tally is what one census found for one policy in one namespace.
type Tally struct {
	// UID is the policy's, to tell it from a later one of the same name.
	UID types.UID
	// Observation counts the zombies the policy governs, held ones too,
	// and the oldest one's age; the failure rate is the controller's.
	Observation
	// OverlappedBy names an older policy of the same kind (CleanupPolicy or
	// ClusterCleanupPolicy) that governs some operation this one selects.
	// A CleanupPolicy winning over a ClusterCleanupPolicy is the rule, not
	// an overlap.
	OverlappedBy string
	// Invalid says why the policy's selector selects nothing, naming the
	// field, or is "".
	Invalid string
}

// Census is one pass over a namespace's finished operations: every
// candidate's tally, by policy key (see Key).
type Census map[types.NamespacedName]Tally

// labelSeed hashes operations' label sets in TakeCensus.
var labelSeed = maphash.MakeSeed()

// labelsHash is an order-free hash of a label set; equal sets hash equal.
func labelsHash(l map[string]string) uint64 {
	var sum uint64
	for k, v := range l {
		sum += maphash.String(labelSeed, k)*0x9e3779b97f4a7c15 ^ maphash.String(labelSeed, v)
	}
	return sum
}

// labelClass is a label set met in a census, and which candidate governs
// the operations that carry it (-1: none).
type labelClass struct {
	labels    map[string]string
	governing int
}

// TakeCensus assigns each of a namespace's finished operations to the
// policy that governs it, once, and tallies every candidate's zombies and
// overlaps. Operations with the same labels have the same governing policy:
// the selectors are tried once per distinct label set, oldest candidate
// first, stopping at the first that selects it; then, for the Overlapping
// condition, each younger candidate not yet known to overlap. The cost is
// O(N·k + L·P): N operations of k labels hashed, L distinct label sets, P
// candidates (O(N + P) when operations carry a few recurring label sets).
func TakeCensus(c *Candidates, finished []arbiterv1alpha1.ConflictResolutionOperation, now time.Time) Census {
	tallies := make([]Tally, len(c.list))
	for i := range c.list {
		tallies[i] = Tally{UID: c.list[i].policy.UID, Invalid: c.list[i].invalid}
	}
	classes := map[uint64][]labelClass{}
	for i := range finished {
		op := &finished[i]
		if op.Namespace != c.namespace {
			continue
		}
		h := labelsHash(op.Labels)
		gov, known := -1, false
		for _, cl := range classes[h] {
			if maps.Equal(cl.labels, op.Labels) {
				gov, known = cl.governing, true
				break
			}
		}
		if !known {
			gov = c.governing(op.Labels)
			classes[h] = append(classes[h], labelClass{labels: op.Labels, governing: gov})
			c.overlaps(tallies, gov, op.Labels)
		}
		if gov < 0 {
			continue
		}
		if p := c.list[gov].policy; IsZombie(p, op) {
			tallies[gov].Count(op, now)
		}
	}
	census := make(Census, len(c.list))
	for i := range c.list {
		census[Key(c.list[i].policy)] = tallies[i]
	}
	return census
}

// overlaps records that the candidates after gov of its kind that select
// an operation with these labels overlap gov.
func (c *Candidates) overlaps(tallies []Tally, gov int, opLabels map[string]string) {
	if gov < 0 {
		return
	}
	cluster := IsCluster(c.list[gov].policy)
	for j := gov + 1; j < len(c.list); j++ {
		if tallies[j].OverlappedBy == "" && IsCluster(c.list[j].policy) == cluster && c.list[j].selects(opLabels) {
			tallies[j].OverlappedBy = c.list[gov].policy.Name
		}
	}
}

// assessed is a policy's report but for what only one kind has.
type assessed struct {
	status  arbiterv1alpha1.CleanupPolicyStatus
	refresh time.Duration
}

// assess writes the health fields and conditions of a policy's status from
// what it observed; kind names the policies that overlap it.
func assess(spec *arbiterv1alpha1.CleanupPolicySpec, generation int64, old *arbiterv1alpha1.CleanupPolicyStatus,
	obs Observation, invalid, overlappedBy, kind string, f Figures, now time.Time) assessed {
	s := *old.DeepCopy()
	state, issues, reason := Health(spec.Health, obs)
	s.Health, s.Issues = state, issues
	s.Zombies = int32(obs.Zombies)
	s.HeldZombies = int32(obs.Held())
	s.OldestZombieAgeSeconds = int64(obs.OldestZombieAge.Seconds())
	s.CleanedTotal += f.Removed + f.Reported
	s.CleanupFailuresTotal += f.Failed
	s.CleanupFailureRatePercent = obs.FailureRatePercent
	if f.Latency != nil {
		s.CleanupLatency = f.Latency
	}
	s.ObservedGeneration = generation
	condition := func(condType string, status bool, reason, message string) {
		c := metav1.Condition{Type: condType, Status: metav1.ConditionFalse, Reason: reason, Message: message,
			ObservedGeneration: generation, LastTransitionTime: metav1.NewTime(now)}
		if status {
			c.Status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&s.Conditions, c)
	}
	if invalid != "" {
		// Such a selector selects nothing: say so rather than govern
		// nothing in silence.
		condition(arbiterv1alpha1.PolicyReady, false, arbiterv1alpha1.ReasonInvalidSelector,
			fmt.Sprintf("%s; the policy selects no operation", invalid))
	} else {
		condition(arbiterv1alpha1.PolicyReady, true, arbiterv1alpha1.ReasonEvaluated,
			fmt.Sprintf("Governs %d zombie(s) with the %s strategy", obs.Zombies, spec.Strategy))
	}
	healthMsg := "Every health threshold is met"
	if len(issues) > 0 {
		healthMsg = fmt.Sprint(issues)
	}
	condition(arbiterv1alpha1.PolicyHealthy, state == arbiterv1alpha1.HealthHealthy, reason, healthMsg)
	if overlappedBy != "" {
		condition(arbiterv1alpha1.PolicyOverlapping, true, arbiterv1alpha1.ReasonOverlapsOlderPolicy,
			fmt.Sprintf("%s %s is older and governs some operations this policy selects", kind, overlappedBy))
	} else {
		condition(arbiterv1alpha1.PolicyOverlapping, false, arbiterv1alpha1.ReasonNoOverlap, "No older policy selects the same operations")
	}
	refresh := ReportInterval
	if untilTooOld := MaxZombieAge(spec.Health) - obs.OldestZombieAge; obs.Zombies > 0 && untilTooOld > 0 {
		refresh = min(refresh, untilTooOld+time.Second)
	}
	return assessed{status: s, refresh: refresh}
}

// PolicyReport reports on CleanupPolicy p from its tally in its namespace's
// census and the figures only the controller has.
func PolicyReport(p *arbiterv1alpha1.CleanupPolicy, t Tally, f Figures, now time.Time) Report {
	obs := t.Observation
	obs.FailureRatePercent = f.FailureRatePercent
	j := assess(&p.Spec, p.Generation, &p.Status, obs, t.Invalid, t.OverlappedBy, "CleanupPolicy", f, now)
	rep := Report{Status: j.status, Refresh: j.refresh}
	// Written only when something but the sweep time changed, and, when the
	// oldest zombie's age alone moved, at most every ReportInterval.
	ageless := func(s arbiterv1alpha1.CleanupPolicyStatus) arbiterv1alpha1.CleanupPolicyStatus {
		s.OldestZombieAgeSeconds = 0
		return s
	}
	if rep.Changed = worthWriting(p.Status.LastSweepTime, now, !equality.Semantic.DeepEqual(p.Status, rep.Status),
		func() bool { return equality.Semantic.DeepEqual(ageless(p.Status), ageless(rep.Status)) }); rep.Changed {
		sweep := metav1.NewTime(now)
		rep.Status.LastSweepTime = &sweep
	}
	return rep
}

// worthWriting says whether a report whose status changed is written. The
// oldest zombie's age changes at every census: written for it alone, a
// namespace where something happens every second would rewrite each of its
// policies' status every second. Such a report waits until the last write
// is ReportInterval old; a change of anything else, the health its age
// crosses a threshold into included, is written at once.
func worthWriting(lastSweep *metav1.Time, now time.Time, changed bool, ageAlone func() bool) bool {
	if !changed {
		return false
	}
	return lastSweep == nil || now.Sub(lastSweep.Time) >= ReportInterval || !ageAlone()
}

// NamespaceTally is a ClusterCleanupPolicy's tally in one namespace.
type NamespaceTally struct {
	Namespace string
	Tally
}

// ClusterReport is a ClusterCleanupPolicy's health report at one instant.
type ClusterReport struct {
	// Status is the policy's new status.
	Status arbiterv1alpha1.ClusterCleanupPolicyStatus
	// Changed: something but lastSweepTime changed.
	Changed bool
	// Refresh is when the report is due again at the latest.
	Refresh time.Duration
}

// ClusterPolicyReport reports on ClusterCleanupPolicy cp from its tallies
// in the namespaces it covers, O(namespaces): zombies summed, the oldest
// age the greatest, the failure rate over its own removals, and the
// namespaces in the worst health listed. problem says why its selectors
// select nothing (see Selectors.Problem), or is "".
func ClusterPolicyReport(cp *arbiterv1alpha1.ClusterCleanupPolicy, tallies []NamespaceTally, problem string, f Figures, now time.Time) ClusterReport {
	obs := Observation{FailureRatePercent: f.FailureRatePercent}
	overlappedBy := ""
	var namespaces []arbiterv1alpha1.NamespaceHealth
	for _, t := range tallies {
		if t.UID != cp.UID {
			continue // another policy's of the same name
		}
		obs.Zombies += t.Zombies
		obs.Kept += t.Kept
		obs.AwaitingAcknowledgement += t.AwaitingAcknowledgement
		obs.OldestZombieAge = max(obs.OldestZombieAge, t.OldestZombieAge)
		if overlappedBy == "" && t.OverlappedBy != "" {
			overlappedBy = t.OverlappedBy
		}
		if t.Zombies > 0 {
			// A namespace's health: its zombies, and the policy's
			// deletions there.
			nsObs := t.Observation
			nsObs.FailureRatePercent = f.NamespaceFailureRatePercent[t.Namespace]
			state, _, _ := Health(cp.Spec.Health, nsObs)
			namespaces = append(namespaces, arbiterv1alpha1.NamespaceHealth{Namespace: t.Namespace, Health: state,
				Zombies: int32(t.Zombies), OldestZombieAgeSeconds: int64(t.OldestZombieAge.Seconds())})
		}
	}
	slices.SortFunc(namespaces, worstFirst)
	j := assess(&cp.Spec.CleanupPolicySpec, cp.Generation, &cp.Status.CleanupPolicyStatus, obs, problem, overlappedBy,
		"ClusterCleanupPolicy", f, now)
	rep := ClusterReport{Refresh: j.refresh}
	rep.Status.CleanupPolicyStatus = j.status
	rep.Status.NamespacesWithZombies = int32(len(namespaces))
	rep.Status.Namespaces = namespaces[:min(len(namespaces), arbiterv1alpha1.MaxReportedNamespaces)]
	if len(rep.Status.Namespaces) == 0 {
		rep.Status.Namespaces = nil
	}
	ageless := func(s arbiterv1alpha1.ClusterCleanupPolicyStatus) arbiterv1alpha1.ClusterCleanupPolicyStatus {
		s = *s.DeepCopy()
		s.OldestZombieAgeSeconds = 0
		for i := range s.Namespaces {
			s.Namespaces[i].OldestZombieAgeSeconds = 0
		}
		return s
	}
	if rep.Changed = worthWriting(cp.Status.LastSweepTime, now, !equality.Semantic.DeepEqual(cp.Status, rep.Status),
		func() bool { return equality.Semantic.DeepEqual(ageless(cp.Status), ageless(rep.Status)) }); rep.Changed {
		sweep := metav1.NewTime(now)
		rep.Status.LastSweepTime = &sweep
	}
	return rep
}

// severity orders health states, the worst highest.
func severity(h arbiterv1alpha1.HealthState) int {
	switch h {
	case arbiterv1alpha1.HealthUnhealthy:
		return 2
	case arbiterv1alpha1.HealthDegraded:
		return 1
	}
	return 0
}

// worstFirst orders namespaces: Unhealthy, Degraded, Healthy; then the
// most zombies, the oldest zombie, the name.
func worstFirst(a, b arbiterv1alpha1.NamespaceHealth) int {
	return cmp.Or(
		cmp.Compare(severity(b.Health), severity(a.Health)),
		cmp.Compare(b.Zombies, a.Zombies),
		cmp.Compare(b.OldestZombieAgeSeconds, a.OldestZombieAgeSeconds),
		cmp.Compare(a.Namespace, b.Namespace))
}
