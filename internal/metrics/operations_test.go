package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// phaseIndex stands for the manager's cache: it answers the registry's
// lists by namespace and phase index, as the cache does.
type phaseIndex struct {
	ops     []arbiterv1alpha1.ConflictResolutionOperation
	byPhase map[string][]*arbiterv1alpha1.ConflictResolutionOperation
	err     error
}

// set replaces the operations and their index.
func (p *phaseIndex) set(ops ...arbiterv1alpha1.ConflictResolutionOperation) {
	p.ops, p.byPhase = ops, nil
}

func (p *phaseIndex) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("not a Get")
}

func (p *phaseIndex) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if p.err != nil {
		return p.err
	}
	o := (&client.ListOptions{}).ApplyOptions(opts)
	phase, ok := o.FieldSelector.RequiresExactMatch(registry.PhaseKey)
	if !ok {
		return errors.New("the collector lists by the phase index only")
	}
	if p.byPhase == nil {
		p.byPhase = map[string][]*arbiterv1alpha1.ConflictResolutionOperation{}
		for i := range p.ops {
			ph := string(registry.PhaseOf(&p.ops[i]))
			p.byPhase[ph] = append(p.byPhase[ph], &p.ops[i])
		}
	}
	// As the cache: the index's objects, their structs copied into the list.
	out := list.(*arbiterv1alpha1.ConflictResolutionOperationList)
	out.Items = make([]arbiterv1alpha1.ConflictResolutionOperation, 0, len(p.byPhase[phase]))
	for _, op := range p.byPhase[phase] {
		if o.Namespace == "" || o.Namespace == op.Namespace {
			out.Items = append(out.Items, *op)
		}
	}
	return nil
}

// informerStore stands for the manager's cache as the collector prefers to
// read it: the operations' informer and its client-go store. Its List
// (from the nil Reader) must never be called.
type informerStore struct {
	client.Reader
	cache.Informers
	store toolscache.Store
	err   error
}

func newInformerStore() *informerStore {
	return &informerStore{store: toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)}
}

func (s *informerStore) set(ops ...arbiterv1alpha1.ConflictResolutionOperation) {
	objs := make([]any, 0, len(ops))
	for i := range ops {
		objs = append(objs, &ops[i])
	}
	if err := s.store.Replace(objs, ""); err != nil {
		panic(err)
	}
}

func (s *informerStore) GetInformer(context.Context, client.Object, ...cache.InformerGetOption) (cache.Informer, error) {
	if s.err != nil {
		return nil, s.err
	}
	return storeInformer{store: s.store}, nil
}

type storeInformer struct {
	cache.Informer
	store toolscache.Store
}

func (i storeInformer) GetStore() toolscache.Store { return i.store }

// source is where a test's collector reads operations.
type source interface {
	client.Reader
	set(ops ...arbiterv1alpha1.ConflictResolutionOperation)
	fail(err error)
}

func (p *phaseIndex) fail(err error)    { p.err = err }
func (s *informerStore) fail(err error) { s.err = err }

// sources are the two ways the collector reads: the informer's store (the
// manager's cache) and lists by the registry's phase index (any reader).
var sources = []struct {
	name string
	new  func() source
}{
	{"informer store", func() source { return newInformerStore() }},
	{"phase index", func() source { return &phaseIndex{} }},
}

func op(ns, name string, phase arbiterv1alpha1.OperationPhase, completedAgo time.Duration) arbiterv1alpha1.ConflictResolutionOperation {
	o := arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		CreationTimestamp: metav1.NewTime(t0.Add(-48 * time.Hour))}}
	o.Status.Phase = phase
	if phase.IsTerminal() {
		o.Status.CompletedAt = &metav1.MicroTime{Time: t0.Add(-completedAgo)}
	}
	return o
}

func elected() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

func TestOperationsCollector(t *testing.T) {
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) { testOperationsCollector(t, src.new()) })
	}
}

func testOperationsCollector(t *testing.T, idx source) {
	c := &OperationsCollector{now: func() time.Time { return t0 }}
	c.Read(idx, elected())

	expect := func(t *testing.T, want string) {
		t.Helper()
		names := []string{"arbiter_zombies", "arbiter_zombie_oldest_age_seconds", "arbiter_queue_depth", "arbiter_operations_executing"}
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
			t.Error(err)
		}
	}

	t.Run("series appear per namespace and phase, governed by a policy or not", func(t *testing.T) {
		idx.set(
			op("bank", "lost-1", arbiterv1alpha1.PhaseRejected, time.Hour),
			op("bank", "lost-2", arbiterv1alpha1.PhaseRejected, 25*time.Hour),
			op("bank", "broke", arbiterv1alpha1.PhaseFailed, time.Minute),
			op("bank", "won", arbiterv1alpha1.PhaseSucceeded, 100*time.Hour),
			op("bank", "new", "", 0),
			op("bank", "next", arbiterv1alpha1.PhaseQueued, 0),
			op("bank", "now", arbiterv1alpha1.PhaseExecuting, 0),
			op("shop", "stopped", arbiterv1alpha1.PhaseCancelled, 2*time.Second),
			op("shop", "waits", arbiterv1alpha1.PhaseQueued, 0),
		)
		expect(t, `
# HELP arbiter_zombies Finished operations that did not succeed (Rejected, Failed, Cancelled) still in the cluster, by namespace and phase, whether or not a CleanupPolicy governs them. Absent when zero.
# TYPE arbiter_zombies gauge
arbiter_zombies{namespace="bank",phase="Failed"} 1
arbiter_zombies{namespace="bank",phase="Rejected"} 2
arbiter_zombies{namespace="shop",phase="Cancelled"} 1
# HELP arbiter_zombie_oldest_age_seconds Time since the oldest zombie of a namespace and phase completed. Absent when there is none.
# TYPE arbiter_zombie_oldest_age_seconds gauge
arbiter_zombie_oldest_age_seconds{namespace="bank",phase="Failed"} 60
arbiter_zombie_oldest_age_seconds{namespace="bank",phase="Rejected"} 90000
arbiter_zombie_oldest_age_seconds{namespace="shop",phase="Cancelled"} 2
# HELP arbiter_queue_depth Operations waiting (Pending or Queued), by namespace. Absent when zero.
# TYPE arbiter_queue_depth gauge
arbiter_queue_depth{namespace="bank"} 2
arbiter_queue_depth{namespace="shop"} 1
# HELP arbiter_operations_executing Operations executing, by namespace. Absent when zero.
# TYPE arbiter_operations_executing gauge
arbiter_operations_executing{namespace="bank"} 1
`)
	})

	t.Run("a phase gone to zero and a namespace gone lose their series", func(t *testing.T) {
		idx.set(
			op("bank", "lost-1", arbiterv1alpha1.PhaseRejected, time.Hour),
			op("bank", "won", arbiterv1alpha1.PhaseSucceeded, 100*time.Hour),
		)
		expect(t, `
# HELP arbiter_zombies Finished operations that did not succeed (Rejected, Failed, Cancelled) still in the cluster, by namespace and phase, whether or not a CleanupPolicy governs them. Absent when zero.
# TYPE arbiter_zombies gauge
arbiter_zombies{namespace="bank",phase="Rejected"} 1
# HELP arbiter_zombie_oldest_age_seconds Time since the oldest zombie of a namespace and phase completed. Absent when there is none.
# TYPE arbiter_zombie_oldest_age_seconds gauge
arbiter_zombie_oldest_age_seconds{namespace="bank",phase="Rejected"} 3600
`)
	})

	t.Run("nothing left: no series at all", func(t *testing.T) {
		idx.set()
		if n := testutil.CollectAndCount(c, "arbiter_zombies", "arbiter_zombie_oldest_age_seconds", "arbiter_queue_depth", "arbiter_operations_executing"); n != 0 {
			t.Errorf("%d series, want none", n)
		}
	})

	t.Run("a failed read fails the scrape instead of reporting zeros", func(t *testing.T) {
		idx.set(op("bank", "lost", arbiterv1alpha1.PhaseRejected, 0))
		idx.fail(errors.New("cache gone"))
		defer idx.fail(nil)
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "cache gone") {
			t.Errorf("scrape error %v, want the read's", err)
		}
	})
}

func TestOperationsCollectorReportsOnlyOnTheLeader(t *testing.T) {
	idx := newInformerStore()
	idx.set(op("bank", "lost", arbiterv1alpha1.PhaseRejected, 0))
	c := &OperationsCollector{now: func() time.Time { return t0 }}
	// A standby reports that it does not lead, and nothing else: sums over
	// replicas would count every operation twice.
	standby := `
# HELP arbiter_leader 1 on the replica that leads (stages, executes, cleans up and reports the gauges above), 0 on a standby.
# TYPE arbiter_leader gauge
arbiter_leader 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(standby)); err != nil {
		t.Fatalf("before a manager is set: %v", err)
	}
	leading := make(chan struct{})
	c.Read(idx, leading)
	if err := testutil.CollectAndCompare(c, strings.NewReader(standby)); err != nil {
		t.Fatalf("a replica that is not the leader: %v", err)
	}
	close(leading)
	if n := testutil.CollectAndCount(c, "arbiter_zombies"); n != 1 {
		t.Fatalf("%d zombie series from the leader, want 1", n)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(strings.Replace(standby, "arbiter_leader 0", "arbiter_leader 1", 1)), "arbiter_leader"); err != nil {
		t.Fatalf("the leader: %v", err)
	}
}

// BenchmarkOperationsScrape is one scrape of a cluster holding 50,000
// zombies in 100 namespaces, 1,000 waiting and 100 executing operations,
// from each source.
func BenchmarkOperationsScrape(b *testing.B) {
	var ops []arbiterv1alpha1.ConflictResolutionOperation
	phases := []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.PhaseCancelled}
	for i := range 50_000 {
		ops = append(ops, op(fmt.Sprint("ns-", i%100), fmt.Sprint("z-", i), phases[i%3], time.Duration(i)*time.Second))
	}
	for i := range 1_100 {
		phase := arbiterv1alpha1.PhaseQueued
		if i%11 == 0 {
			phase = arbiterv1alpha1.PhaseExecuting
		}
		ops = append(ops, op(fmt.Sprint("ns-", i%100), fmt.Sprint("w-", i), phase, 0))
	}
	for _, src := range sources {
		b.Run(src.name, func(b *testing.B) {
			idx := src.new()
			idx.set(ops...)
			c := &OperationsCollector{now: func() time.Time { return t0 }}
			c.Read(idx, elected())
			b.ReportAllocs()
			series := 0
			for b.Loop() {
				ch := make(chan prometheus.Metric, 1024)
				go func() {
					c.Collect(ch)
					close(ch)
				}()
				for range ch {
					series++
				}
			}
			b.ReportMetric(float64(series)/float64(b.N), "series/op")
		})
	}
}
