package bench

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// steady: a stream of operations over 50 targets for 30 s, Reject: 100 a
// second (the load), and 25 a second, which this machine sustains.
// Each operation waits out its 100 ms staging window; what the latency adds
// to that is arbiter's decision and apply, and any queue a saturated
// machine builds.
func (e *env) steady() Result {
	figures := map[string]float64{"staging_window_seconds": 0.1}
	for _, perSecond := range []int{100, 25} {
		const targets, seconds = 50, 30
		ns := fmt.Sprintf("steady-%d", perSecond)
		e.namespace(ns, targets)
		var ops []*arbiterv1alpha1.ConflictResolutionOperation
		for i := range perSecond * seconds {
			ops = append(ops, operation(ns, fmt.Sprintf("op-%d", i), i%targets, 1, false))
		}
		lat, elapsed, phases := e.run(ns, ops, false, time.Second/time.Duration(perSecond))
		prefix := fmt.Sprintf("at_%d_per_second_", perSecond)
		figures[prefix+"operations"] = float64(len(ops))
		figures[prefix+"succeeded"] = float64(phases[arbiterv1alpha1.PhaseSucceeded])
		figures[prefix+"rejected"] = float64(phases[arbiterv1alpha1.PhaseRejected])
		figures[prefix+"seconds_until_all_terminal"] = elapsed.Seconds()
		figures[prefix+"latency_p50_seconds"] = percentile(lat, 50).Seconds()
		figures[prefix+"latency_p99_seconds"] = percentile(lat, 99).Seconds()
	}
	return Result{Scenario: "steady-load", Cores: runtime.NumCPU(), Figures: figures,
		Notes: "a create every 10 ms (then every 40 ms) for 30 s over 50 targets, Reject, 100 ms window; latency from create (client clock) to terminal (watch)"}
}

// writesPerOutcome: the API writes each outcome costs, from the API server's
// apiserver_request_total, on 100 targets at a time: a winner alone; a
// winner and a loser; a winner and a queued operation; a winner and a loser
// removed by an Immediate policy. Each cost is the difference per target.
func (e *env) writesPerOutcome() Result {
	const targets = 100
	type cost struct{ arbiter, events, policies float64 }
	measure := func(ns string, per int, queue, cleanup bool) cost {
		e.namespace(ns, targets)
		if cleanup {
			e.policy(ns, "immediate", arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupImmediate, MaxDeletionsPerSecond: 10000})
		}
		var ops []*arbiterv1alpha1.ConflictResolutionOperation
		for t := range targets {
			for i := range per {
				op := operation(ns, fmt.Sprintf("op-%d-%d", t, i), t, int32(i+1), queue)
				op.Spec.Timeout = &metav1.Duration{Duration: 5 * time.Minute}
				ops = append(ops, op)
			}
		}
		e.settle()
		before := e.writesByResource()
		e.run(ns, ops, cleanup, 0)
		e.settle()
		after := e.writesByResource()
		delta := func(resources ...string) float64 {
			d := 0.0
			for _, r := range resources {
				d += after[r] - before[r]
			}
			return d / targets
		}
		return cost{arbiter: delta("conflictresolutionoperations", "accounts"), events: delta("events"), policies: delta("cleanuppolicies")}
	}
	winner := measure("outcome-winner", 1, false, false)
	loser := measure("outcome-loser", 2, false, false)
	queued := measure("outcome-queued", 2, true, false)
	cleaned := measure("outcome-cleaned", 2, false, true)
	return Result{Scenario: "writes-per-outcome", Cores: runtime.NumCPU(), Figures: map[string]float64{
		"winner_writes":                winner.arbiter,
		"winner_event_writes":          winner.events,
		"loser_writes":                 loser.arbiter - winner.arbiter,
		"loser_event_writes":           loser.events - winner.events,
		"queued_writes":                queued.arbiter - winner.arbiter,
		"queued_event_writes":          queued.events - winner.events,
		"cleaned_writes":               cleaned.arbiter - loser.arbiter,
		"cleaned_event_writes":         cleaned.events - loser.events,
		"cleaned_policy_status_writes": cleaned.policies,
	}, Notes: "writes on operations and targets (create included), events apart, per operation of each outcome; cleaned is the removal of a loser on top of its own writes"}
}

// settle waits until the API server has seen no write for 1.5 s: events
// and policy reports trail an operation's terminal phase.
func (e *env) settle() {
	var last map[string]float64
	quiet := 0
	still := func(context.Context) (bool, error) {
		now := e.writesByResource()
		if maps.Equal(now, last) {
			quiet++
		} else {
			quiet = 0
		}
		last = now
		return quiet >= 3, nil
	}
	if err := wait.PollUntilContextTimeout(e.ctx, 500*time.Millisecond, 2*time.Minute, true, still); err != nil {
		e.t.Fatal("the API server kept receiving writes for two minutes")
	}
}
