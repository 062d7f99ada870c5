package cleanup

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// reportOn is p's report from a census of its namespace's policies.
func reportOn(p *arbiterv1alpha1.CleanupPolicy, policies []arbiterv1alpha1.CleanupPolicy,
	finished []arbiterv1alpha1.ConflictResolutionOperation, f Figures, now time.Time) Report {
	return PolicyReport(p, TakeCensus(NewCandidates(p.Namespace, nil, policies, nil, nil), finished, now)[Key(p)], f, now)
}

func TestPolicyReport(t *testing.T) {
	audit := map[string]string{"team": "audit"}
	now := t0.Add(time.Hour)
	// "all" governs what "audit" (older) does not select.
	auditPolicy := policy("audit", -time.Hour, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Selector = &metav1.LabelSelector{MatchLabels: audit}
	})
	all := policy("all", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Health.MaxZombies = ptr.To[int32](2)
		s.Health.MaxZombieAge = &metav1.Duration{Duration: 2 * time.Hour}
	})
	policies := []arbiterv1alpha1.CleanupPolicy{all, auditPolicy}
	ops := func(list ...*arbiterv1alpha1.ConflictResolutionOperation) []arbiterv1alpha1.ConflictResolutionOperation {
		var out []arbiterv1alpha1.ConflictResolutionOperation
		for _, op := range list {
			out = append(out, *op)
		}
		return out
	}
	kept := annotated(finished("kept", arbiterv1alpha1.PhaseRejected, -30*time.Minute, nil), arbiterv1alpha1.KeepAnnotation, "true")
	sweptAt := metav1.NewTime(t0)
	recorded := all.DeepCopy()
	recorded.Status = reportOn(recorded, policies, nil, Figures{}, t0).Status

	tests := []struct {
		name     string
		policy   *arbiterv1alpha1.CleanupPolicy
		finished []arbiterv1alpha1.ConflictResolutionOperation
		figures  Figures
		// want: zombies, oldest age (s), health, issues, overlapping, refresh
		want string
	}{
		{"counts the zombies it governs, held ones too, not Succeeded ones nor another policy's, which it overlaps",
			&all, ops(
				finished("r", arbiterv1alpha1.PhaseRejected, 0, nil),
				kept,
				finished("ok", arbiterv1alpha1.PhaseSucceeded, -2*time.Hour, nil),
				finished("theirs", arbiterv1alpha1.PhaseFailed, -3*time.Hour, audit)),
			Figures{},
			"2 5400 Healthy [1 zombie(s) held from cleanup: 1 arbiter.dev/keep=true] true 30s"},
		{"Degraded above maxZombies",
			&all, ops(
				finished("a", arbiterv1alpha1.PhaseRejected, 0, nil),
				finished("b", arbiterv1alpha1.PhaseRejected, 0, nil),
				finished("c", arbiterv1alpha1.PhaseFailed, 0, nil)),
			Figures{},
			"3 3600 Degraded [High zombie count: 3 (threshold 2)] false 30s"},
		{"Degraded past maxZombieAge",
			&all, ops(finished("old", arbiterv1alpha1.PhaseRejected, -2*time.Hour, nil)),
			Figures{},
			"1 10800 Degraded [Oldest zombie is 3h0m0s old (threshold 2h0m0s)] false 30s"},
		{"on the timer while the oldest zombie is far from maxZombieAge",
			&all, ops(finished("aging", arbiterv1alpha1.PhaseRejected, 50*time.Minute, nil)),
			Figures{},
			"1 600 Healthy [] false 30s"},
		{"due sooner than the timer when the oldest is within it of maxZombieAge",
			&all, ops(finished("aging", arbiterv1alpha1.PhaseRejected, -time.Hour+10*time.Second, nil)),
			Figures{},
			"1 7190 Healthy [] false 11s"},
		{"Unhealthy when removals fail",
			&all, nil, Figures{Failed: 3, FailureRatePercent: 60},
			"0 0 Unhealthy [Cleanup failure rate 60% over the last 15m0s (threshold 10%)] false 30s"},
		{"overlapping when an older policy governs some operation it selects",
			&all, ops(finished("theirs", arbiterv1alpha1.PhaseFailed, 0, audit)),
			Figures{},
			"0 0 Healthy [] true 30s"},
		{"not overlapping when only it selects",
			&auditPolicy, ops(finished("theirs", arbiterv1alpha1.PhaseFailed, 0, audit), finished("r", arbiterv1alpha1.PhaseRejected, 0, nil)),
			Figures{},
			"1 3600 Healthy [] false 30s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := reportOn(tt.policy, policies, tt.finished, tt.figures, now)
			s := rep.Status
			got := fmt.Sprintf("%d %d %s %v %v %v", s.Zombies, s.OldestZombieAgeSeconds, s.Health, s.Issues,
				meta.IsStatusConditionTrue(s.Conditions, arbiterv1alpha1.PolicyOverlapping), rep.Refresh)
			if got != tt.want {
				t.Errorf("report %q, want %q", got, tt.want)
			}
			healthy := meta.IsStatusConditionTrue(s.Conditions, arbiterv1alpha1.PolicyHealthy)
			if healthy != (s.Health == arbiterv1alpha1.HealthHealthy) || !meta.IsStatusConditionTrue(s.Conditions, arbiterv1alpha1.PolicyReady) {
				t.Errorf("conditions %+v do not match health %s", s.Conditions, s.Health)
			}
		})
	}

	t.Run("totals add what was not yet recorded; the latency is kept without new samples", func(t *testing.T) {
		p := all.DeepCopy()
		p.Status.CleanedTotal, p.Status.CleanupFailuresTotal = 10, 1
		lat := &arbiterv1alpha1.CleanupLatency{P50: &metav1.Duration{Duration: time.Second}, P99: &metav1.Duration{Duration: 2 * time.Second}}
		p.Status.CleanupLatency = lat
		s := reportOn(p, policies, nil, Figures{Removed: 5, Failed: 2}, now).Status
		if s.CleanedTotal != 15 || s.CleanupFailuresTotal != 3 || s.CleanupLatency == nil || *s.CleanupLatency.P99 != *lat.P99 {
			t.Errorf("totals %d/%d latency %v, want 15/3 and the recorded latency", s.CleanedTotal, s.CleanupFailuresTotal, s.CleanupLatency)
		}
		var l Latencies
		l.Add(3 * time.Second)
		s = reportOn(p, policies, nil, Figures{Latency: LatencyOf(&l)}, now).Status
		if s.CleanupLatency.P50.Duration != 3*time.Second || s.CleanupLatency.P99.Duration != 3*time.Second {
			t.Errorf("latency %v, want 3s", s.CleanupLatency)
		}
	})

	t.Run("unchanged but for time: not written, the sweep time kept", func(t *testing.T) {
		p := recorded.DeepCopy()
		p.Status.LastSweepTime = &sweptAt
		if rep := reportOn(p, policies, nil, Figures{}, now); rep.Changed || !rep.Status.LastSweepTime.Equal(&sweptAt) {
			t.Errorf("an unchanged report is to be written: %v, sweep %v", rep.Changed, rep.Status.LastSweepTime)
		}
		rep := reportOn(p, policies, nil, Figures{Removed: 1}, now)
		if !rep.Changed || !rep.Status.LastSweepTime.Time.Equal(now) {
			t.Errorf("a changed report: written %v, sweep %v, want true at %v", rep.Changed, rep.Status.LastSweepTime, now)
		}
		if p.Status.CleanedTotal != 0 {
			t.Error("the report changed the policy it read")
		}
	})
}

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy("bank", arbiterv1alpha1.CleanupDeferred)
	if !IsDefault(p) || p.Namespace != "bank" {
		t.Fatalf("DefaultPolicy = %+v", p)
	}
	if named := policy(DefaultPolicyName[2:], 0, nil); IsDefault(&named) {
		t.Error("a CleanupPolicy is taken for the default")
	}
	op := finished("op", arbiterv1alpha1.PhaseFailed, 0, nil)
	want := Verdict{Zombie: true, Removable: true, At: t0.Add(30 * time.Minute), Why: "Failed zombie, Deferred strategy, retention 30m0s"}
	if v := Judge(p, op); fmt.Sprint(v) != fmt.Sprint(want) {
		t.Errorf("Judge under the default = %+v, want %+v", v, want)
	}
	if v := Judge(p, finished("op", arbiterv1alpha1.PhaseCancelled, 0, nil)); v.Zombie {
		t.Error("the default takes Cancelled for a zombie")
	}
}

func TestPolicyReportNamesAnInvalidSelector(t *testing.T) {
	bad := policy("bad", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}
	})
	op := finished("r", arbiterv1alpha1.PhaseRejected, 0, map[string]string{"team": "audit"})
	rep := reportOn(&bad, []arbiterv1alpha1.CleanupPolicy{bad}, []arbiterv1alpha1.ConflictResolutionOperation{*op}, Figures{}, t0)
	ready := meta.FindStatusCondition(rep.Status.Conditions, arbiterv1alpha1.PolicyReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != arbiterv1alpha1.ReasonInvalidSelector {
		t.Fatalf("Ready = %+v, want False/InvalidSelector", ready)
	}
	if want := `spec.selector: "Near" is not a valid label selector operator`; !strings.Contains(ready.Message, want) {
		t.Errorf("Ready message %q, want it to contain %q", ready.Message, want)
	}
	if rep.Status.Zombies != 0 {
		t.Errorf("zombies = %d, want 0: the policy selects nothing", rep.Status.Zombies)
	}
}

// The oldest zombie's age changes at every census: a report that changes
// it alone is written at most every ReportInterval, while a change of
// anything else (a new zombie, the health the age crosses into) is written
// at once. Otherwise each event in a namespace rewrites every one of its
// policies' status.
func TestAnAgeAloneIsWrittenAtMostEveryReportInterval(t *testing.T) {
	p := policy("all", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Health.MaxZombieAge = &metav1.Duration{Duration: time.Hour}
	})
	now := t0.Add(10 * time.Minute)
	zombies := []arbiterv1alpha1.ConflictResolutionOperation{*finished("old", arbiterv1alpha1.PhaseRejected, 0, nil)}
	report := func(at time.Time) bool {
		rep := reportOn(&p, []arbiterv1alpha1.CleanupPolicy{p}, zombies, Figures{}, at)
		if rep.Changed {
			p.Status = rep.Status
		}
		return rep.Changed
	}
	if !report(now) {
		t.Fatal("the first report is not written")
	}
	if report(now.Add(time.Second)) {
		t.Error("a report 1s later, its age alone changed, is written")
	}
	if !report(now.Add(ReportInterval)) {
		t.Error("a report ReportInterval after the last write, its age changed, is not written")
	}
	zombies = append(zombies, *finished("new", arbiterv1alpha1.PhaseFailed, 10*time.Minute, nil))
	if !report(now.Add(ReportInterval + time.Second)) {
		t.Error("a report with a new zombie, 1s after the last write, is not written")
	}
	// The oldest zombie passes maxZombieAge (1h) 1s after the last write.
	p.Status.LastSweepTime = &metav1.Time{Time: t0.Add(time.Hour)}
	if !report(t0.Add(time.Hour+time.Second)) || p.Status.Health != arbiterv1alpha1.HealthDegraded {
		t.Errorf("a report whose age crosses maxZombieAge is not written at once: health %s", p.Status.Health)
	}

	cp := clusterPolicy("platform", 0, nil)
	tallies := func(age time.Duration) []NamespaceTally {
		return []NamespaceTally{{Namespace: "calm", Tally: Tally{UID: cp.UID, Observation: Observation{Zombies: 1, OldestZombieAge: age}}}}
	}
	clusterReport := func(age time.Duration, at time.Time) bool {
		rep := ClusterPolicyReport(&cp, tallies(age), "", Figures{}, at)
		if rep.Changed {
			cp.Status = rep.Status
		}
		return rep.Changed
	}
	if !clusterReport(time.Minute, now) {
		t.Fatal("the cluster policy's first report is not written")
	}
	if clusterReport(time.Minute+time.Second, now.Add(time.Second)) {
		t.Error("the cluster policy's report 1s later, its ages alone changed, is written")
	}
	if !clusterReport(time.Minute+ReportInterval, now.Add(ReportInterval)) {
		t.Error("the cluster policy's report ReportInterval later is not written")
	}
}
