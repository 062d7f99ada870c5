// Package metrics defines arbiter's Prometheus metrics, registered with the
// controller-runtime registry that the manager's metrics endpoint serves.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/arbiter-dev/arbiter/internal/version"
)

var (
	// OperationsTotal counts operations reaching a terminal phase.
	OperationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arbiter_operations_total",
		Help: "Operations that reached a terminal phase, by namespace, function (the first 100 names seen; later ones are \"other\"), phase and reason.",
	}, []string{"namespace", "function", "phase", "reason"})

	// OperationDuration observes creation to terminal phase.
	OperationDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "arbiter_operation_duration_seconds",
		Help: "Time from an operation's creation to its terminal phase.",
		// 10ms to 46h: a storm's milliseconds to a queue that waits out the
		// longest timeout, 24h.
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 25),
	})

	// StagingBatchSize observes how many operations each staging decision arbitrated.
	StagingBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "arbiter_staging_batch_size",
		Help:    "Operations arbitrated together in one staging decision.",
		Buckets: []float64{1, 2, 3, 5, 8, 13, 21, 34, 55, 100},
	})

	// OCCConflictsTotal counts 409 Conflicts met writing targets.
	OCCConflictsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "arbiter_occ_conflicts_total",
		Help: "409 Conflicts met while writing or restoring targets.",
	})
)

var (
	// CleanupTotal counts cleanup attempts.
	CleanupTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arbiter_cleanup_total",
		Help: "Cleanup attempts by namespace, strategy and result (success, failure, dryrun).",
	}, []string{"namespace", "strategy", "result"})

	// CleanupLatency observes the time from completedAt until an operation was removed.
	CleanupLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "arbiter_cleanup_latency_seconds",
		Help: "Time from an operation's completedAt until arbiter removed it, by strategy.",
		// 10ms to 46h: Immediate's milliseconds to Lazy's 6-24h retentions.
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 13),
	}, []string{"strategy"})
)

// ForgetNamespace deletes a deleted namespace's series and its share of
// function names: without it they would last until the manager restarts,
// and a cluster that creates and deletes namespaces all day (CI) would grow
// every scrape without end.
func ForgetNamespace(namespace string) {
	OperationsTotal.DeletePartialMatch(prometheus.Labels{"namespace": namespace})
	CleanupTotal.DeletePartialMatch(prometheus.Labels{"namespace": namespace})
	functions.forget(namespace)
}

// BuildInfo is 1, labelled with the manager's version: its absence is how
// an alert tells that no manager is scraped at all.
var BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "arbiter_build_info",
	Help: "1, labelled with the version of the manager serving these metrics.",
}, []string{"version"})

// collectors are every metric arbiter exports; exported.txt lists them.
func collectors() []prometheus.Collector {
	return []prometheus.Collector{OperationsTotal, OperationDuration, StagingBatchSize, OCCConflictsTotal,
		CleanupTotal, CleanupLatency, Operations, BuildInfo}
}

func init() {
	BuildInfo.WithLabelValues(version.Version).Set(1)
	ctrlmetrics.Registry.MustRegister(collectors()...)
}
