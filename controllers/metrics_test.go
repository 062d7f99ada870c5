package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// series gathers the manager's registry, as a scrape does, and returns the
// values of a metric's series in a namespace, keyed by their phase label.
func series(g Gomega, name, namespace string) map[string]float64 {
	families, err := ctrlmetrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	out := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == namespace {
				out[labels["phase"]] = valueOf(m)
			}
		}
	}
	return out
}

func valueOf(m *dto.Metric) float64 {
	if m.GetGauge() != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

var _ = Describe("Zombie metrics", func() {
	It("reports the zombies of a namespace without any CleanupPolicy, and drops the series when they go", func() {
		ns := newNamespace()
		createAccount(ns, "alice", 100)
		high, low := credit(ns, "high", 8, 10, "alice"), credit(ns, "low", 2, 20, "alice")
		for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{high, low} {
			op.Spec.Staging.Window = duration(time.Second)
		}
		create(high, low)
		eventuallyPhase(high, arbiterv1alpha1.PhaseSucceeded)
		eventuallyPhase(low, arbiterv1alpha1.PhaseRejected)

		Eventually(func(g Gomega) {
			g.Expect(series(g, "arbiter_zombies", ns)).To(Equal(map[string]float64{"Rejected": 1}))
			g.Expect(series(g, "arbiter_zombie_oldest_age_seconds", ns)).To(HaveKeyWithValue("Rejected", BeNumerically(">=", 0)))
			g.Expect(series(g, "arbiter_queue_depth", ns)).To(BeEmpty())
			g.Expect(series(g, "arbiter_operations_executing", ns)).To(BeEmpty())
		}, util.Timeout, util.Interval).Should(Succeed())

		Expect(k8sClient.Delete(ctx, low)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(series(g, "arbiter_zombies", ns)).To(BeEmpty())
			g.Expect(series(g, "arbiter_zombie_oldest_age_seconds", ns)).To(BeEmpty())
		}, util.Timeout, util.Interval).Should(Succeed())
	})
})
