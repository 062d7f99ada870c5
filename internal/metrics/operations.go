package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// zombiePhases are the phases arbiter_zombies counts: every finished
// operation that did not succeed, whatever CleanupPolicy governs it, if any.
var zombiePhases = []arbiterv1alpha1.OperationPhase{
	arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.PhaseCancelled,
}

// waitingPhases are the phases of an operation that has not started.
var waitingPhases = []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued}

// scrapeTimeout bounds a scrape's reads of the cache, which block only
// while it has not synced yet.
const scrapeTimeout = 10 * time.Second

var (
	zombiesDesc = prometheus.NewDesc("arbiter_zombies",
		"Finished operations that did not succeed (Rejected, Failed, Cancelled) still in the cluster, by namespace and phase, whether or not a CleanupPolicy governs them. Absent when zero.",
		[]string{"namespace", "phase"}, nil)
	zombieOldestAgeDesc = prometheus.NewDesc("arbiter_zombie_oldest_age_seconds",
		"Time since the oldest zombie of a namespace and phase completed. Absent when there is none.",
		[]string{"namespace", "phase"}, nil)
	queueDepthDesc = prometheus.NewDesc("arbiter_queue_depth",
		"Operations waiting (Pending or Queued), by namespace. Absent when zero.",
		[]string{"namespace"}, nil)
	executingDesc = prometheus.NewDesc("arbiter_operations_executing",
		"Operations executing, by namespace. Absent when zero.",
		[]string{"namespace"}, nil)
)

// Operations counts operations by namespace and phase at scrape time, from
// the manager's cache through the registry's phase index: nothing is
// updated on the operations' hot path, and a namespace's series vanish with
// its last operation of the phase. Setup points it at a manager.
var Operations = &OperationsCollector{now: time.Now}

// OperationsCollector is the collector behind Operations.
type OperationsCollector struct {
	mu      sync.Mutex
	reader  client.Reader
	elected <-chan struct{}
	now     func() time.Time
}

// Read makes the collector read operations from reader (the manager's
// cache) once elected is closed. Only the leader reports: every replica
// caches every operation, and sums over replicas would count each twice.
func (c *OperationsCollector) Read(reader client.Reader, elected <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reader, c.elected = reader, elected
}

func (c *OperationsCollector) source() (client.Reader, func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reader == nil {
		return nil, nil
	}
	select {
	case <-c.elected:
		return c.reader, c.now
	default:
		return nil, nil
	}
}

// Describe implements prometheus.Collector.
func (c *OperationsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{zombiesDesc, zombieOldestAgeDesc, queueDepthDesc, executingDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A failed read fails the scrape
// rather than report zeros.
func (c *OperationsCollector) Collect(ch chan<- prometheus.Metric) {
	reader, now := c.source()
	if reader == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	phases := append(append([]arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseExecuting}, waitingPhases...), zombiePhases...)
	f := newFigures()
	at := now()
	// One phase at a time: a list shares the cache's objects but copies
	// their structs, tens of thousands for the zombies of a busy cluster.
	for _, phase := range phases {
		ops, err := registry.InPhases(ctx, reader, "", phase)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(zombiesDesc, err)
			return
		}
		f.add(ops, at)
	}
	for k, n := range f.zombies {
		ch <- prometheus.MustNewConstMetric(zombiesDesc, prometheus.GaugeValue, float64(n), k.namespace, string(k.phase))
		ch <- prometheus.MustNewConstMetric(zombieOldestAgeDesc, prometheus.GaugeValue, f.oldest[k].Seconds(), k.namespace, string(k.phase))
	}
	for ns, n := range f.waiting {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), ns)
	}
	for ns, n := range f.executing {
		ch <- prometheus.MustNewConstMetric(executingDesc, prometheus.GaugeValue, float64(n), ns)
	}
}

type namespacePhase struct {
	namespace string
	phase     arbiterv1alpha1.OperationPhase
}

// figures are the counts of one scrape; a key is present only when its
// count is not zero.
type figures struct {
	zombies            map[namespacePhase]int
	oldest             map[namespacePhase]time.Duration
	waiting, executing map[string]int
}

func newFigures() figures {
	return figures{zombies: map[namespacePhase]int{}, oldest: map[namespacePhase]time.Duration{},
		waiting: map[string]int{}, executing: map[string]int{}}
}

func (f figures) add(ops []arbiterv1alpha1.ConflictResolutionOperation, now time.Time) {
	for i := range ops {
		op := &ops[i]
		switch phase := registry.PhaseOf(op); phase {
		case arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued:
			f.waiting[op.Namespace]++
		case arbiterv1alpha1.PhaseExecuting:
			f.executing[op.Namespace]++
		default:
			k := namespacePhase{op.Namespace, phase}
			f.zombies[k]++
			f.oldest[k] = max(f.oldest[k], now.Sub(cleanup.CompletedAt(op)))
		}
	}
}
