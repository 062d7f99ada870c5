package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func micro(d time.Duration) *metav1.MicroTime {
	m := metav1.NewMicroTime(t0.Add(d))
	return &m
}

// operation builds an operation on Account alice (or the given targets).
func operation(name string, mutate func(*arbiterv1alpha1.ConflictResolutionOperation)) arbiterv1alpha1.ConflictResolutionOperation {
	op := arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bank", UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0)},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "credit-account", Priority: 5,
			Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "alice"}}},
	}
	if mutate != nil {
		mutate(&op)
	}
	return op
}

var alice = TargetKey{Group: "bank.example.com", Kind: "Account", Namespace: "bank", Name: "alice"}

func summaryNames(ops []OperationSummary) []string {
	out := []string{}
	for _, o := range ops {
		out = append(out, o.Name)
	}
	return out
}

func TestTargetReportOrdersWaitingAsTheManagerDoes(t *testing.T) {
	ops := []arbiterv1alpha1.ConflictResolutionOperation{
		operation("running", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Status.Phase, op.Status.StartedAt, op.Status.EffectivePriority = arbiterv1alpha1.PhaseExecuting, micro(time.Second), 5
		}),
		// Queued at priority 8: the earlier staged first.
		operation("queued-late", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Priority = 8
			op.Status.Phase, op.Status.EffectivePriority, op.Status.StagedAt, op.Status.Winner = arbiterv1alpha1.PhaseQueued, 8, micro(2*time.Second), "running"
		}),
		operation("queued-early", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Priority = 2 // raised to 8 by a parent: the effective one counts
			op.Status.Phase, op.Status.EffectivePriority, op.Status.StagedAt, op.Status.Winner = arbiterv1alpha1.PhaseQueued, 8, micro(time.Second), "running"
		}),
		// Not decided yet: its own priority ranks it, ahead of both.
		operation("pending-critical", func(op *arbiterv1alpha1.ConflictResolutionOperation) { op.Spec.Priority = 10 }),
		operation("pending-default", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Priority = 0
			op.Status.Phase = arbiterv1alpha1.PhasePending
		}),
		// Outcomes: newest first, at most two.
		operation("old", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Status.Phase, op.Status.Reason, op.Status.CompletedAt = arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, micro(time.Second)
		}),
		operation("newest", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Status.Phase, op.Status.Reason, op.Status.CompletedAt = arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging, micro(3*time.Second)
			op.Status.Winner = "running"
		}),
		operation("middle", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Status.Phase, op.Status.Reason, op.Status.CompletedAt = arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout, micro(2*time.Second)
		}),
		// Other targets: another name, another group with the same kind and name.
		operation("bob", func(op *arbiterv1alpha1.ConflictResolutionOperation) { op.Spec.Targets[0].Name = "bob" }),
		operation("other-group", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Targets[0].APIVersion = "other.example.com/v1"
		}),
		// A multi-target operation naming alice second.
		operation("transfer", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Targets = append([]arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "bob"}}, op.Spec.Targets...)
			op.Spec.Priority = 1
		}),
	}
	r := targetReport(alice, ops, 2)
	if got := summaryNames(r.Executing); !equal(got, []string{"running"}) {
		t.Errorf("executing = %v, want [running]", got)
	}
	if got, want := summaryNames(r.Waiting), []string{"pending-critical", "queued-early", "queued-late", "pending-default", "transfer"}; !equal(got, want) {
		t.Errorf("waiting = %v, want %v", got, want)
	}
	if got, want := summaryNames(r.Recent), []string{"newest", "middle"}; !equal(got, want) {
		t.Errorf("recent = %v, want %v", got, want)
	}
	if r.Waiting[3].Phase != arbiterv1alpha1.PhasePending || r.Waiting[3].Priority != 5 || r.Waiting[3].OnConflict != arbiterv1alpha1.ConflictPolicyReject {
		t.Errorf("a pending operation without priority: %+v, want Pending, priority 5, onConflict Reject", r.Waiting[3])
	}
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestTargetReportRendersThreeSections(t *testing.T) {
	ops := []arbiterv1alpha1.ConflictResolutionOperation{
		operation("running", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Status.Phase, op.Status.StartedAt, op.Status.EffectivePriority, op.Status.Attempts = arbiterv1alpha1.PhaseExecuting, micro(time.Second), 10, 2
		}),
		operation("waiter", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Staging.OnConflict = arbiterv1alpha1.ConflictPolicyQueue
			op.Status.Phase, op.Status.EffectivePriority, op.Status.StagedAt, op.Status.Winner = arbiterv1alpha1.PhaseQueued, 5, micro(time.Second), "running"
		}),
	}
	var out bytes.Buffer
	if err := targetReport(alice, ops, 5).render(&out, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	want := `Target: Account.bank.example.com bank/alice

Executing:
NAME      FUNCTION         PRIORITY   ATTEMPTS   STARTED
running   credit-account   10         2          59s

Waiting, in the order arbiter decides them (effective priority, then staged time, then UID; one not yet staged by its creation, to the second):
#     NAME     FUNCTION         PHASE    PRIORITY   ON CONFLICT   BEHIND    STAGED
1     waiter   credit-account   Queued   5          Queue         running   59s

Recent outcomes, newest first: none
`
	if out.String() != want {
		t.Errorf("render:\n%s\nwant:\n%s", out.String(), want)
	}
}

func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "ConfigMap"},
		{Group: "apps", Version: "v1", Kind: "Deployment"},
		{Group: "bank.example.com", Version: "v1", Kind: "Account"},
	} {
		m.Add(gvk, meta.RESTScopeNamespace)
	}
	return m
}

func TestResolveTarget(t *testing.T) {
	for arg, want := range map[string]TargetKey{
		"configmap/settings":                 {Kind: "ConfigMap", Name: "settings"},
		"configmaps/settings":                {Kind: "ConfigMap", Name: "settings"},
		"deployments.apps/web":               {Group: "apps", Kind: "Deployment", Name: "web"},
		"deployments.v1.apps/web":            {Group: "apps", Kind: "Deployment", Name: "web"},
		"account/alice":                      {Group: "bank.example.com", Kind: "Account", Name: "alice"},
		"Account/alice":                      {Group: "bank.example.com", Kind: "Account", Name: "alice"},
		"accounts.bank.example.com/alice":    {Group: "bank.example.com", Kind: "Account", Name: "alice"},
		"accounts.v1.bank.example.com/alice": {Group: "bank.example.com", Kind: "Account", Name: "alice"},
	} {
		got, err := resolveTarget(testMapper(), arg)
		if err != nil || got != want {
			t.Errorf("resolveTarget(%q) = %+v, %v; want %+v", arg, got, err, want)
		}
	}
	for arg, msg := range map[string]string{
		"settings":         `target: "settings" is not <kind>/<name>`,
		"configmap/":       `target: "configmap/" is not <kind>/<name>`,
		"/settings":        `target: "/settings" is not <kind>/<name>`,
		"configmap/a/b":    `target: "configmap/a/b" is not <kind>/<name>`,
		"widgets/settings": `target: the server has no resource type "widgets"`,
	} {
		if _, err := resolveTarget(testMapper(), arg); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("resolveTarget(%q) error = %v, want it to contain %q", arg, err, msg)
		}
	}
}

func TestOperationName(t *testing.T) {
	for arg, want := range map[string]string{"x": "x", "cro/x": "x", "conflictresolutionoperations.arbiter.dev/x": "x"} {
		if got, err := operationName(arg); err != nil || got != want {
			t.Errorf("operationName(%q) = %q, %v; want %q", arg, got, err, want)
		}
	}
	for _, arg := range []string{"configmap/x", "cro/", "cro/a/b"} {
		if _, err := operationName(arg); err == nil || !strings.Contains(err.Error(), "operation: ") {
			t.Errorf("operationName(%q) error = %v, want one naming the operation argument", arg, err)
		}
	}
}

func explanation(r WhyReport) string { return strings.Join(r.Explanation, "\n") }

func TestExplain(t *testing.T) {
	winner := operation("critical", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
		op.Spec.Priority = 10
		s := &op.Status
		s.Phase, s.Reason, s.EffectivePriority, s.Attempts = arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied, 10, 3
		s.StagedAt, s.StartedAt, s.CompletedAt = micro(10*time.Millisecond), micro(120*time.Millisecond), micro(300*time.Millisecond)
		s.Message = "Applied to 1 target(s) in 3 write attempt(s)"
		s.Targets = []arbiterv1alpha1.TargetStatus{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "alice",
			ResourceVersionBefore: "41", ResourceVersionAfter: "44", Applied: true}}
	})
	loser := func(name string, priority int32, staged time.Duration, mutate func(*arbiterv1alpha1.ConflictResolutionOperation)) arbiterv1alpha1.ConflictResolutionOperation {
		return operation(name, func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Priority = priority
			s := &op.Status
			s.Phase, s.Reason, s.EffectivePriority, s.Winner = arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging, priority, "critical"
			s.StagedAt, s.CompletedAt = micro(staged), micro(120*time.Millisecond)
			s.Message = "Lost staging to critical among 3 operations on the same target"
			if mutate != nil {
				mutate(op)
			}
		})
	}
	low := loser("low", 2, 5*time.Millisecond, nil)
	peer := loser("peer", 10, 20*time.Millisecond, nil)
	queued := loser("queued", 5, 20*time.Millisecond, func(op *arbiterv1alpha1.ConflictResolutionOperation) {
		op.Status.Phase, op.Status.Reason, op.Status.CompletedAt = arbiterv1alpha1.PhaseQueued, arbiterv1alpha1.ReasonQueued, nil
	})

	cases := []struct {
		name   string
		op     arbiterv1alpha1.ConflictResolutionOperation
		winner *arbiterv1alpha1.ConflictResolutionOperation
		beaten []arbiterv1alpha1.ConflictResolutionOperation
		want   []string
	}{{
		name: "the winner: its batch, conflicts, resourceVersions",
		op:   winner, beaten: []arbiterv1alpha1.ConflictResolutionOperation{peer, low},
		want: []string{
			"Operation bank/critical (function credit-account) targets Account alice (bank.example.com/v1).",
			"It ended Succeeded (Applied), 300ms after it was created.",
			"It contended with effective priority 10.",
			"It won over 2 operation(s) still on record: low (Rejected, priority 2), peer (Rejected, priority 10).",
			"It made 3 write attempt(s): 2 met a 409 Conflict",
			"Account alice: written, resourceVersion 41 -> 44.",
			"Timeline from creation (2026-11-29T10:00:00Z): staged +10ms, started +120ms, completed +300ms.",
		},
	}, {
		name: "a loser of lower priority",
		op:   low, winner: &winner,
		want: []string{
			"It ended Rejected (LostStaging)",
			"It lost staging to critical. critical ranked first with effective priority 10, higher than this one's 2.",
			"With onConflict: Reject, a loser ends Rejected",
			"It made no write attempt: no target was written.",
			"arbiter's message: Lost staging to critical among 3 operations on the same target.",
		},
	}, {
		name: "a loser of equal priority, staged later",
		op:   peer, winner: &winner,
		want: []string{"Both had effective priority 10; critical was staged 10ms earlier, and the earlier one ranks first."},
	}, {
		name: "a loser whose winner is gone",
		op:   low,
		want: []string{"The winner is gone (cleaned up or deleted), so its priority cannot be compared."},
	}, {
		name: "a queued operation",
		op:   queued, winner: &winner,
		want: []string{"It is Queued, not finished.", "It lost its batch to critical and, with onConflict: Queue, waits its turn"},
	}, {
		name: "a preempted operation",
		op: operation("slow", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			s := &op.Status
			s.Phase, s.Reason, s.EffectivePriority, s.Winner, s.Attempts = arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonPreempted, 5, "critical", 4
			s.Targets = []arbiterv1alpha1.TargetStatus{{Kind: "Account", Name: "alice", ResourceVersionBefore: "40", ResourceVersionAfter: "41"}}
		}),
		winner: &winner,
		want: []string{
			"It was executing when critical, of strictly higher effective priority (10 against its 5), took the target after its grace period of 1s",
			"It made 4 write attempt(s).",
			"Account alice: written at resourceVersion 41, then rolled back.",
		},
	}, {
		name: "a failure a human must see to, with a parent's priority",
		op: operation("transfer", func(op *arbiterv1alpha1.ConflictResolutionOperation) {
			op.Spec.Priority, op.Spec.ParentRef = 2, &arbiterv1alpha1.OperationReference{Name: "batch-7"}
			op.Spec.RequestedBy = &arbiterv1alpha1.RequesterInfo{Username: "alice@example.com"}
			s := &op.Status
			s.Phase, s.Reason, s.EffectivePriority, s.Attempts = arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonRollbackFailed, 8, 1
		}),
		want: []string{
			"It was requested by alice@example.com",
			"It contended with effective priority 8: its own is 2, raised by its parent batch-7.",
			"A target could not be restored: a human must check it, then annotate the operation arbiter.dev/acknowledged=true",
		},
	}, {
		name: "a pending operation",
		op:   operation("fresh", nil),
		want: []string{"It is Pending, not finished.", "arbiter has not decided it yet: its batch closes 100ms after it is staged"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := explanation(explain(&c.op, c.winner, c.beaten))
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("explanation lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestHealthReport(t *testing.T) {
	policy := func(ns, name string, health arbiterv1alpha1.HealthState, zombies int32, oldest int64, issues ...string) arbiterv1alpha1.CleanupPolicy {
		p := arbiterv1alpha1.CleanupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		p.Spec.Strategy = arbiterv1alpha1.CleanupDeferred
		p.Status = arbiterv1alpha1.CleanupPolicyStatus{Health: health, Zombies: zombies, OldestZombieAgeSeconds: oldest, Issues: issues,
			CleanedTotal: 12, CleanupFailureRatePercent: 3, LastSweepTime: &metav1.Time{Time: t0.Add(-30 * time.Second)},
			CleanupLatency: &arbiterv1alpha1.CleanupLatency{P50: &metav1.Duration{Duration: 2 * time.Second}, P99: &metav1.Duration{Duration: 9 * time.Second}}}
		return p
	}
	platform := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "platform"}}
	platform.Spec.Strategy = arbiterv1alpha1.CleanupImmediate
	platform.Status.CleanupPolicyStatus = policy("", "", arbiterv1alpha1.HealthHealthy, 5, 30).Status
	platform.Status.NamespacesWithZombies = 2
	platform.Status.Namespaces = []arbiterv1alpha1.NamespaceHealth{{Namespace: "ci", Health: arbiterv1alpha1.HealthHealthy, Zombies: 4},
		{Namespace: "dev", Health: arbiterv1alpha1.HealthHealthy, Zombies: 1}}
	r := healthReport([]arbiterv1alpha1.CleanupPolicy{
		policy("shop", "default", arbiterv1alpha1.HealthHealthy, 0, 0),
		policy("bank", "audit", arbiterv1alpha1.HealthHealthy, 3, 60),
		policy("bank", "default", arbiterv1alpha1.HealthDegraded, 1234, 7200, "High zombie count: 1234"),
		clusterAsRow(platform),
	}, "", false)
	withConditions := policy("bank", "audit", arbiterv1alpha1.HealthHealthy, 3, 60)
	withConditions.Status.Conditions = []metav1.Condition{
		{Type: arbiterv1alpha1.PolicyReady, Status: metav1.ConditionFalse, Reason: arbiterv1alpha1.ReasonInvalidSelector, Message: "spec.selector: bad"},
		{Type: arbiterv1alpha1.PolicyOverlapping, Status: metav1.ConditionTrue, Reason: arbiterv1alpha1.ReasonOverlapsOlderPolicy, Message: "CleanupPolicy old governs some"},
	}
	if got := policyHealth(&withConditions).Issues; !equal(got, []string{"Not ready: spec.selector: bad", "Overlapping: CleanupPolicy old governs some"}) {
		t.Errorf("issues from conditions = %q", got)
	}
	if len(r.Namespaces) != 3 || r.Namespaces[0].Namespace != clusterRow || r.Namespaces[1].Namespace != "bank" || r.Namespaces[2].Namespace != "shop" {
		t.Fatalf("namespaces = %+v, want the cluster policies, bank, then shop", r.Namespaces)
	}
	bank := r.Namespaces[1]
	if bank.Health != arbiterv1alpha1.HealthDegraded || bank.Zombies != 1237 || bank.OldestZombieAgeSeconds != 7200 {
		t.Errorf("bank = %+v, want the worst health (Degraded), 1237 zombies, oldest 7200s", bank)
	}
	var out bytes.Buffer
	if err := r.render(&out, t0); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE   POLICY     STRATEGY    HEALTH     ZOMBIES   OLDEST ZOMBIE   FAILURES (15m)   LATENCY P50/P99   CLEANED   LAST SWEEP
(cluster)   platform   Immediate   Healthy    5         30s             3%               2s/9s             12        30s ago
bank        audit      Deferred    Healthy    3         60s             3%               2s/9s             12        30s ago
bank        default    Deferred    Degraded   1234      120m            3%               2s/9s             12        30s ago
shop        default    Deferred    Healthy    0         -               3%               2s/9s             12        30s ago

Issues:
  (cluster)/platform: Worst of 2 namespaces with zombies: ci (Healthy, 4 zombies), dev (Healthy, 1 zombies)
  bank/default: High zombie count: 1234
`
	if out.String() != want {
		t.Errorf("render:\n%s\nwant:\n%s", out.String(), want)
	}

	empty := healthReport(nil, "quiet", false)
	out.Reset()
	if err := empty.render(&out, t0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "No CleanupPolicy in namespace quiet: its zombies are kept") {
		t.Errorf("empty report: %q", out.String())
	}

	// A user who may not list ClusterCleanupPolicies is told they are left
	// out, not that there are none.
	for _, policies := range [][]arbiterv1alpha1.CleanupPolicy{nil, {policy("shop", "default", arbiterv1alpha1.HealthHealthy, 0, 0)}} {
		hidden := healthReport(policies, "", true)
		out.Reset()
		if err := hidden.render(&out, t0); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), clustersHiddenNote) || strings.Contains(out.String(), "no ClusterCleanupPolicy") {
			t.Errorf("report with %d policies, cluster policies forbidden: %q", len(policies), out.String())
		}
	}
}

// run runs the plugin's command line as a user would, without a cluster.
func run(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	cmd := newRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestBadFlagsNameTheFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"health", "-o", "xml"}, `--output (-o): "xml" is not one of [json yaml]`},
		{[]string{"target", "configmap/x", "--recent", "-1"}, "--recent: must be 0 or more, got -1"},
		{[]string{"target"}, "accepts 1 arg(s), received 0"},
		{[]string{"health", "extra"}, `unknown command "extra"`},
	} {
		_, stderr, err := run(c.args...)
		if err == nil || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: err %v, stderr %q; want an error saying %q", c.args, err, stderr, c.want)
		}
	}
}

func TestPrintJSON(t *testing.T) {
	var out bytes.Buffer
	o := &options{output: "json", streams: genericiooptions.IOStreams{Out: &out}}
	report := explain(new(operation("fresh", nil)), nil, nil)
	if err := o.print(report, nil); err != nil {
		t.Fatal(err)
	}
	var back WhyReport
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("-o json is not JSON: %v\n%s", err, out.String())
	}
	if back.Name != "fresh" || back.Phase != arbiterv1alpha1.PhasePending || len(back.Explanation) == 0 {
		t.Errorf("-o json = %+v", back)
	}
}
