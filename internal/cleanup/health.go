package cleanup

import (
	"fmt"
	"slices"
	"strings"
	"time"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// FailureWindow is the span the cleanup failure rate is measured over.
const FailureWindow = 15 * time.Minute

// Outcomes remembers cleanup attempts over FailureWindow.
type Outcomes struct {
	at     []time.Time
	failed []bool
}

// Add records one attempt, forgetting those past the window: a policy whose
// report is never read (the operator-wide default) must not grow forever.
func (o *Outcomes) Add(now time.Time, failed bool) {
	o.forget(now)
	o.at = append(o.at, now)
	o.failed = append(o.failed, failed)
}

// FailureRatePercent is the share of attempts in the window ending at now
// that failed, in percent, and the number of attempts.
func (o *Outcomes) FailureRatePercent(now time.Time) (percent int32, attempts int) {
	o.forget(now)
	failures := 0
	for _, f := range o.failed {
		if f {
			failures++
		}
	}
	if len(o.at) == 0 {
		return 0, 0
	}
	return int32(failures * 100 / len(o.at)), len(o.at)
}

// forget drops the attempts older than the window ending at now. The
// dropped prefix is freed when append next moves the slices.
func (o *Outcomes) forget(now time.Time) {
	cut := 0
	for cut < len(o.at) && now.Sub(o.at[cut]) > FailureWindow {
		cut++
	}
	o.at, o.failed = o.at[cut:], o.failed[cut:]
}

// latencySamples bounds the memory of cleanup latencies kept per policy.
const latencySamples = 1024

// Latencies keeps the most recent cleanup latencies (completedAt to gone).
type Latencies struct {
	samples []time.Duration
	next    int
}

// Add records one latency.
func (l *Latencies) Add(d time.Duration) {
	if len(l.samples) < latencySamples {
		l.samples = append(l.samples, d)
		return
	}
	l.samples[l.next] = d
	l.next = (l.next + 1) % latencySamples
}

// Percentile returns the p-th percentile (0 < p <= 100), and false when
// there are no samples.
func (l *Latencies) Percentile(p float64) (time.Duration, bool) {
	if len(l.samples) == 0 {
		return 0, false
	}
	sorted := slices.Clone(l.samples)
	slices.Sort(sorted)
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)], true
}

// Observation is what a policy sees of its namespace at one instant.
type Observation struct {
	Zombies         int
	OldestZombieAge time.Duration
	// Kept and AwaitingAcknowledgement count the zombies held from cleanup
	// (see HoldOf), among Zombies.
	Kept, AwaitingAcknowledgement int
	FailureRatePercent            int32
}

// Count adds one zombie to the observation made at now.
func (o *Observation) Count(op *arbiterv1alpha1.ConflictResolutionOperation, now time.Time) {
	o.Zombies++
	o.OldestZombieAge = max(o.OldestZombieAge, now.Sub(CompletedAt(op)))
	switch HoldOf(op) {
	case HeldAwaitingAcknowledgement:
		o.AwaitingAcknowledgement++
	case HeldKept:
		o.Kept++
	}
}

// Held is how many zombies are held from cleanup.
func (o Observation) Held() int { return o.Kept + o.AwaitingAcknowledgement }

// heldSentence says which zombies are held and why, for status.issues.
func heldSentence(o Observation) string {
	var parts []string
	if o.AwaitingAcknowledgement > 0 {
		parts = append(parts, fmt.Sprintf("%d %s/%s awaiting %s=true", o.AwaitingAcknowledgement,
			arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonRollbackFailed, arbiterv1alpha1.AcknowledgedAnnotation))
	}
	if o.Kept > 0 {
		parts = append(parts, fmt.Sprintf("%d %s=true", o.Kept, arbiterv1alpha1.KeepAnnotation))
	}
	return fmt.Sprintf("%d zombie(s) held from cleanup: %s", o.Held(), strings.Join(parts, ", "))
}

// MaxZombieAge is the age past which a zombie makes its policy Degraded:
// t's maxZombieAge, else 24h.
func MaxZombieAge(t arbiterv1alpha1.HealthThresholds) time.Duration {
	if t.MaxZombieAge != nil {
		return t.MaxZombieAge.Duration
	}
	return 24 * time.Hour
}

// Health judges an observation against a policy's thresholds. It returns the
// state, one sentence per threshold crossed and one for the held zombies,
// and the condition reason. A Failed/RollbackFailed zombie awaiting
// acknowledgement makes the policy Degraded: a human must act. Zombies kept
// with arbiter.dev/keep=true alone leave it Healthy, with their sentence.
func Health(t arbiterv1alpha1.HealthThresholds, o Observation) (arbiterv1alpha1.HealthState, []string, string) {
	maxZombies, maxAge, maxRate := int32(1000), MaxZombieAge(t), int32(10)
	if t.MaxZombies != nil {
		maxZombies = *t.MaxZombies
	}
	if t.MaxFailureRatePercent != nil {
		maxRate = *t.MaxFailureRatePercent
	}
	state, reason := arbiterv1alpha1.HealthHealthy, arbiterv1alpha1.ReasonThresholdsMet
	var issues []string
	if o.Zombies > int(maxZombies) {
		state, reason = arbiterv1alpha1.HealthDegraded, arbiterv1alpha1.ReasonTooManyZombies
		issues = append(issues, fmt.Sprintf("High zombie count: %d (threshold %d)", o.Zombies, maxZombies))
	}
	if o.OldestZombieAge > maxAge {
		if state == arbiterv1alpha1.HealthHealthy {
			reason = arbiterv1alpha1.ReasonZombieTooOld
		}
		state = arbiterv1alpha1.HealthDegraded
		issues = append(issues, fmt.Sprintf("Oldest zombie is %s old (threshold %s)", o.OldestZombieAge.Round(time.Second), maxAge))
	}
	if o.AwaitingAcknowledgement > 0 {
		if state == arbiterv1alpha1.HealthHealthy {
			reason = arbiterv1alpha1.ReasonAwaitingAcknowledgement
		}
		state = arbiterv1alpha1.HealthDegraded
	}
	if o.Held() > 0 {
		issues = append(issues, heldSentence(o))
	}
	if o.FailureRatePercent > maxRate {
		state, reason = arbiterv1alpha1.HealthUnhealthy, arbiterv1alpha1.ReasonCleanupFailing
		issues = append(issues, fmt.Sprintf("Cleanup failure rate %d%% over the last %s (threshold %d%%)", o.FailureRatePercent, FailureWindow, maxRate))
	}
	return state, issues, reason
}
