package cleanup

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

func clusterPolicy(name string, created time.Duration, namespaceSelector map[string]string) arbiterv1alpha1.ClusterCleanupPolicy {
	p := arbiterv1alpha1.ClusterCleanupPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0.Add(created))},
	}
	p.Spec.Strategy = arbiterv1alpha1.CleanupDeferred
	p.Spec.Phases = []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"}
	if namespaceSelector != nil {
		p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: namespaceSelector}
	}
	return p
}

func TestGoverningAmongCleanupAndClusterCleanupPolicies(t *testing.T) {
	audit := map[string]string{"team": "audit"}
	prod := map[string]string{"env": "prod"}
	namespaced := []arbiterv1alpha1.CleanupPolicy{
		// Younger than every cluster policy: a CleanupPolicy wins all the same.
		policy("audit-only", 24*time.Hour, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Selector = &metav1.LabelSelector{MatchLabels: audit}
		}),
	}
	clusters := []arbiterv1alpha1.ClusterCleanupPolicy{
		clusterPolicy("newer", time.Hour, nil),
		clusterPolicy("prod-only", -time.Hour, prod),
		clusterPolicy("b-oldest", 0, nil),
		clusterPolicy("a-oldest", 0, nil),
	}
	bad := clusterPolicy("bad", -2*time.Hour, nil)
	bad.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: "Near"}}}
	clusters = append(clusters, bad)
	tests := []struct {
		name            string
		namespaceLabels map[string]string
		opLabels        map[string]string
		want            string
	}{
		{"a CleanupPolicy that selects it wins over any cluster policy", prod, audit, "bank/audit-only"},
		{"else the oldest cluster policy that covers the namespace", prod, nil, "/prod-only"},
		{"a namespaceSelector leaves other namespaces out; ties on age go to the lowest name", nil, nil, "/a-oldest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCandidates("bank", tt.namespaceLabels, namespaced, clusters, NewSelectors())
			got := c.Governing(finished("op", arbiterv1alpha1.PhaseRejected, 0, tt.opLabels))
			if got == nil || Key(got).String() != tt.want {
				t.Errorf("Governing = %v, want %s", got, tt.want)
			}
		})
	}
	if k := Key(ClusterView(&clusters[0])); k.Namespace != "" {
		t.Errorf("a cluster policy's key %v has a namespace, which a CleanupPolicy's key could collide with", k)
	}
}

func TestSelectorsParseOncePerPolicyVersion(t *testing.T) {
	sels := NewSelectors()
	p := policy("p", 0, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	})
	p.UID, p.Generation = "uid-p", 1
	first, _ := sels.Selector(&p)
	// The same version is not parsed again, whatever its spec says now.
	p.Spec.Selector.MatchLabels["team"] = "b"
	if again, _ := sels.Selector(&p); again.String() != first.String() {
		t.Errorf("parsed again: %s, then %s", first, again)
	}
	p.Generation = 2
	if next, _ := sels.Selector(&p); next.String() != "team=b" {
		t.Errorf("a new generation's selector = %s, want team=b", next)
	}
}

// selectsPlainly parses a selector at every call, as arbiter once did.
func selectsPlainly(ls *metav1.LabelSelector, l map[string]string) bool {
	if ls == nil {
		return true
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	return err == nil && sel.Matches(labels.Set(l))
}

// referenceGoverning is the rule written plainly: the oldest CleanupPolicy
// that selects op, else the oldest covering ClusterCleanupPolicy that does.
func referenceGoverning(op *arbiterv1alpha1.ConflictResolutionOperation, namespaceLabels map[string]string,
	policies []arbiterv1alpha1.CleanupPolicy, clusters []arbiterv1alpha1.ClusterCleanupPolicy) *arbiterv1alpha1.CleanupPolicy {
	var gov *arbiterv1alpha1.CleanupPolicy
	for i := range policies {
		if p := &policies[i]; p.Namespace == op.Namespace && selectsPlainly(p.Spec.Selector, op.Labels) && (gov == nil || Older(p, gov)) {
			gov = p
		}
	}
	if gov != nil {
		return gov
	}
	for i := range clusters {
		cp := ClusterView(&clusters[i])
		if selectsPlainly(clusters[i].Spec.NamespaceSelector, namespaceLabels) && selectsPlainly(cp.Spec.Selector, op.Labels) && (gov == nil || Older(cp, gov)) {
			gov = cp
		}
	}
	return gov
}

// referenceTally is one policy's tally as the per-policy report computed it:
// every operation judged against every policy.
func referenceTally(p *arbiterv1alpha1.CleanupPolicy, namespaceLabels map[string]string, policies []arbiterv1alpha1.CleanupPolicy,
	clusters []arbiterv1alpha1.ClusterCleanupPolicy, finished []arbiterv1alpha1.ConflictResolutionOperation, now time.Time) Tally {
	t := Tally{UID: p.UID}
	for i := range finished {
		op := &finished[i]
		gov := referenceGoverning(op, namespaceLabels, policies, clusters)
		if gov == nil {
			continue
		}
		mine := Key(gov) == Key(p)
		if mine && IsZombie(gov, op) {
			t.Count(op, now)
		}
		// Only a policy of its own kind overlaps it (p covers the namespace:
		// it is a candidate).
		if !mine && t.OverlappedBy == "" && IsCluster(gov) == IsCluster(p) && selectsPlainly(p.Spec.Selector, op.Labels) {
			t.OverlappedBy = gov.Name
		}
	}
	return t
}

// The census assigns each operation once; it must find what judging every
// operation against every policy found.
func TestCensusMatchesThePerPolicyReports(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 1))
	values := []string{"a", "b", "c"}
	randomLabels := func() map[string]string {
		l := map[string]string{}
		for _, k := range []string{"team", "tier"} {
			if rng.IntN(3) > 0 {
				l[k] = values[rng.IntN(len(values))]
			}
		}
		return l
	}
	randomSelector := func() *metav1.LabelSelector {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}}
		}
		return &metav1.LabelSelector{MatchLabels: map[string]string{"team": values[rng.IntN(len(values))]}}
	}
	phases := []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
		arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded}
	now := t0.Add(time.Hour)
	for round := range 200 {
		var policies []arbiterv1alpha1.CleanupPolicy
		for i := range rng.IntN(5) {
			p := policy(fmt.Sprintf("p%d", i), time.Duration(rng.IntN(3))*time.Second, nil)
			p.UID, p.Spec.Selector = types.UID(p.Name), randomSelector()
			policies = append(policies, p)
		}
		var clusters []arbiterv1alpha1.ClusterCleanupPolicy
		for i := range rng.IntN(4) {
			cp := clusterPolicy(fmt.Sprintf("c%d", i), time.Duration(rng.IntN(3))*time.Second, nil)
			cp.Spec.Selector, cp.Spec.NamespaceSelector = randomSelector(), randomSelector()
			clusters = append(clusters, cp)
		}
		var ops []arbiterv1alpha1.ConflictResolutionOperation
		for i := range rng.IntN(40) {
			op := finished(fmt.Sprintf("op%d", i), phases[rng.IntN(len(phases))], -time.Duration(rng.IntN(100))*time.Minute, randomLabels())
			switch rng.IntN(6) {
			case 0: // held zombies count apart
				op = annotated(op, arbiterv1alpha1.KeepAnnotation, "true")
			case 1:
				op.Status.Reason = arbiterv1alpha1.ReasonRollbackFailed
			}
			ops = append(ops, *op)
		}
		namespaceLabels := randomLabels()
		c := NewCandidates("bank", namespaceLabels, policies, clusters, NewSelectors())
		for i := range ops {
			got, want := c.Governing(&ops[i]), referenceGoverning(&ops[i], namespaceLabels, policies, clusters)
			if (got == nil) != (want == nil) || (got != nil && Key(got) != Key(want)) {
				t.Fatalf("round %d: %s governed by %v, want %v", round, ops[i].Name, got, want)
			}
		}
		census := TakeCensus(c, ops, now)
		for _, p := range c.Policies() {
			want := referenceTally(p, namespaceLabels, policies, clusters, ops, now)
			if got := census[Key(p)]; got != want {
				t.Fatalf("round %d: %s's tally %+v, want %+v", round, Key(p), got, want)
			}
		}
	}
}

func TestClusterPolicyReportSumsNamespacesWorstFirst(t *testing.T) {
	cp := clusterPolicy("platform", 0, nil)
	cp.Spec.Health.MaxZombies = ptr.To[int32](2)
	now := t0.Add(time.Hour)
	tallies := []NamespaceTally{
		{Namespace: "calm", Tally: Tally{UID: cp.UID, Observation: Observation{Zombies: 1, OldestZombieAge: time.Minute}}},
		{Namespace: "busy", Tally: Tally{UID: cp.UID, Observation: Observation{Zombies: 3, OldestZombieAge: time.Hour}, OverlappedBy: "older"}},
		{Namespace: "empty", Tally: Tally{UID: cp.UID}},
		{Namespace: "stale", Tally: Tally{UID: "a-deleted-namesake", Observation: Observation{Zombies: 100}}},
	}
	s := ClusterPolicyReport(&cp, tallies, "", Figures{}, now).Status
	got := fmt.Sprintf("%d %d %s %d", s.Zombies, s.OldestZombieAgeSeconds, s.Health, s.NamespacesWithZombies)
	if want := "4 3600 Degraded 2"; got != want {
		t.Errorf("summed %q, want %q", got, want)
	}
	var listed []string
	for _, n := range s.Namespaces {
		listed = append(listed, fmt.Sprintf("%s:%s:%d", n.Namespace, n.Health, n.Zombies))
	}
	if want := "[busy:Degraded:3 calm:Healthy:1]"; fmt.Sprint(listed) != want {
		t.Errorf("namespaces %v, want %s", listed, want)
	}
	if c := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.PolicyOverlapping); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.Contains(c.Message, "ClusterCleanupPolicy older") {
		t.Errorf("Overlapping = %+v, want True naming ClusterCleanupPolicy older", c)
	}

	// A namespace where the policy's deletions fail comes first, however
	// few its zombies.
	s = ClusterPolicyReport(&cp, tallies, "", Figures{NamespaceFailureRatePercent: map[string]int32{"calm": 50}}, now).Status
	if n := s.Namespaces[0]; n.Namespace != "calm" || n.Health != arbiterv1alpha1.HealthUnhealthy {
		t.Errorf("first namespace %+v, want calm, Unhealthy", n)
	}

	var many []NamespaceTally
	for i := range 15 {
		many = append(many, NamespaceTally{Namespace: fmt.Sprintf("ns-%02d", i), Tally: Tally{UID: cp.UID, Observation: Observation{Zombies: i + 1}}})
	}
	s = ClusterPolicyReport(&cp, many, "", Figures{}, now).Status
	if len(s.Namespaces) != arbiterv1alpha1.MaxReportedNamespaces || s.Namespaces[0].Namespace != "ns-14" || s.NamespacesWithZombies != 15 {
		t.Errorf("listed %d namespaces from %v, of %d, want the 10 worst from ns-14, of 15", len(s.Namespaces), s.Namespaces[0], s.NamespacesWithZombies)
	}
}

func TestClusterPolicyReportNamesAnInvalidNamespaceSelector(t *testing.T) {
	cp := clusterPolicy("platform", 0, nil)
	cp.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: "Near"}}}
	sels := NewSelectors()
	if sels.Covers(&cp, map[string]string{"env": "prod"}) {
		t.Error("an invalid namespaceSelector covers a namespace")
	}
	s := ClusterPolicyReport(&cp, nil, sels.Problem(&cp), Figures{}, t0).Status
	ready := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.PolicyReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != arbiterv1alpha1.ReasonInvalidSelector ||
		!strings.Contains(ready.Message, `spec.namespaceSelector: "Near" is not a valid label selector operator`) {
		t.Errorf("Ready = %+v, want False/InvalidSelector naming spec.namespaceSelector", ready)
	}
}
