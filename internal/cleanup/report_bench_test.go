package cleanup

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// BenchmarkRefreshEveryReport is one refresh of every policy's report in a
// namespace of 50,000 zombies, 50 CleanupPolicies (49 select one team each,
// the newest selects everything and governs the 50th team) and 3
// ClusterCleanupPolicies that cover it: one census, then each report. With
// the report per policy that judged every operation against every policy,
// the same refresh of the 50 CleanupPolicies took 218 s, 53 GB and 1.37
// billion allocations on a 2-core machine.
func BenchmarkRefreshEveryReport(b *testing.B) {
	const zombies, teams = 50000, 50
	var policies []arbiterv1alpha1.CleanupPolicy
	for i := range teams - 1 {
		policies = append(policies, policy(fmt.Sprintf("team-%d", i), time.Duration(i)*time.Second, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint(i)}}
		}))
	}
	policies = append(policies, policy("everything", time.Hour, nil))
	var clusters []arbiterv1alpha1.ClusterCleanupPolicy
	for i := range 3 {
		clusters = append(clusters, clusterPolicy(fmt.Sprintf("platform-%d", i), time.Duration(i)*time.Hour, nil))
	}
	finishedOps := make([]arbiterv1alpha1.ConflictResolutionOperation, zombies)
	for i := range finishedOps {
		finishedOps[i] = *finished(fmt.Sprintf("z-%d", i), arbiterv1alpha1.PhaseRejected, time.Duration(i)*time.Millisecond,
			map[string]string{"team": fmt.Sprint(i % teams), "app": "bank"})
	}
	now := t0.Add(2 * time.Hour)
	sels := NewSelectors()
	b.ReportAllocs()
	for b.Loop() {
		census := TakeCensus(NewCandidates("bank", nil, policies, clusters, sels), finishedOps, now)
		for i := range policies {
			PolicyReport(&policies[i], census[Key(&policies[i])], Figures{}, now)
		}
		for i := range clusters {
			t := NamespaceTally{Namespace: "bank", Tally: census[Key(ClusterView(&clusters[i]))]}
			ClusterPolicyReport(&clusters[i], []NamespaceTally{t}, "", Figures{}, now)
		}
	}
}
