package cleanup

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// BenchmarkRefreshEveryReport is one refresh of every policy's report in a
// namespace of 50,000 zombies and 50 policies: 49 select one team each, the
// newest selects everything and governs the 50th team.
func BenchmarkRefreshEveryReport(b *testing.B) {
	const zombies, teams = 50000, 50
	var policies []arbiterv1alpha1.CleanupPolicy
	for i := range teams - 1 {
		policies = append(policies, policy(fmt.Sprintf("team-%d", i), time.Duration(i)*time.Second, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint(i)}}
		}))
	}
	policies = append(policies, policy("everything", time.Hour, nil))
	finishedOps := make([]arbiterv1alpha1.ConflictResolutionOperation, zombies)
	for i := range finishedOps {
		finishedOps[i] = *finished(fmt.Sprintf("z-%d", i), arbiterv1alpha1.PhaseRejected, time.Duration(i)*time.Millisecond,
			map[string]string{"team": fmt.Sprint(i % teams), "app": "bank"})
	}
	now := t0.Add(2 * time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		for i := range policies {
			PolicyReport(&policies[i], policies, finishedOps, Figures{}, now)
		}
	}
}
