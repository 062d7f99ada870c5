package metrics

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// countedPhases are the phases the collector counts: waiting (Pending,
// Queued), Executing, and the zombies, every finished operation that did not
// succeed, whatever CleanupPolicy governs it, if any. Succeeded operations,
// often the most numerous, are not counted.
var countedPhases = []arbiterv1alpha1.OperationPhase{
	arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued, arbiterv1alpha1.PhaseExecuting,
	arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.PhaseCancelled,
}

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
	leaderDesc = prometheus.NewDesc("arbiter_leader",
		"1 on the replica that leads (stages, executes, cleans up and reports the gauges above), 0 on a standby.",
		nil, nil)
)

// Operations counts operations by namespace and phase at scrape time, from
// the manager's cache: nothing is updated on the operations' hot path, and
// a namespace's series vanish with its last operation of the phase. Setup
// points it at a manager.
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
	for _, d := range []*prometheus.Desc{zombiesDesc, zombieOldestAgeDesc, queueDepthDesc, executingDesc, leaderDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A failed read fails the scrape
// rather than report zeros.
func (c *OperationsCollector) Collect(ch chan<- prometheus.Metric) {
	reader, now := c.source()
	// Every replica says whether it leads: an alert can tell "no leader"
	// (the gauges above are absent then) from "nothing to count".
	leading := 0.0
	if reader != nil {
		leading = 1
	}
	ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, leading)
	if reader == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	f := newFigures()
	at := now()
	if err := eachOperation(ctx, reader, func(op *arbiterv1alpha1.ConflictResolutionOperation) { f.add(op, at) }); err != nil {
		ch <- prometheus.NewInvalidMetric(zombiesDesc, err)
		return
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

func (f figures) add(op *arbiterv1alpha1.ConflictResolutionOperation, now time.Time) {
	switch phase := registry.PhaseOf(op); phase {
	case arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued:
		f.waiting[op.Namespace]++
	case arbiterv1alpha1.PhaseExecuting:
		f.executing[op.Namespace]++
	case arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.PhaseCancelled:
		k := namespacePhase{op.Namespace, phase}
		f.zombies[k]++
		// A clock step back never reports a negative age.
		f.oldest[k] = max(f.oldest[k], now.Sub(cleanup.CompletedAt(op)))
	}
}

// eachOperation calls fn on every operation in a phase the collector counts.
// From the manager's cache it walks the informer's store, whose objects it
// shares: a list copies each object's struct, 58MB a scrape for 50,000
// zombies. Any other reader is listed through the registry's phase index.
func eachOperation(ctx context.Context, reader client.Reader, fn func(*arbiterv1alpha1.ConflictResolutionOperation)) error {
	if informers, ok := reader.(cache.Informers); ok {
		informer, err := informers.GetInformer(ctx, &arbiterv1alpha1.ConflictResolutionOperation{})
		if err != nil {
			return fmt.Errorf("reading the operations' informer: %w", err)
		}
		if s, ok := informer.(interface{ GetStore() toolscache.Store }); ok {
			for _, obj := range s.GetStore().List() {
				if op, ok := obj.(*arbiterv1alpha1.ConflictResolutionOperation); ok && slices.Contains(countedPhases, registry.PhaseOf(op)) {
					fn(op)
				}
			}
			return nil
		}
	}
	for _, phase := range countedPhases {
		ops, err := registry.InPhases(ctx, reader, "", phase)
		if err != nil {
			return err
		}
		for i := range ops {
			fn(&ops[i])
		}
	}
	return nil
}
