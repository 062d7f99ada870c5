package controllers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// operationCache holds operations in memory and answers for them as the
// manager's cache does: Get returns a deep copy, a List on the target index
// a shallow copy of each operation on the target (registry.OnTarget asks
// for no deep copy), and Delete checks its preconditions. It counts the
// target walks. Policies and namespaces stay in the fake client: a fake
// List copies every object of the kind and cannot stand for the cache on
// targets of thousands of operations.
type operationCache struct {
	mu  sync.Mutex
	ops map[types.NamespacedName]*arbiterv1alpha1.ConflictResolutionOperation
	// byTarget is the target index: operations by registry.KeyOf.
	byTarget map[string]map[types.NamespacedName]*arbiterv1alpha1.ConflictResolutionOperation
	rv       int
	walks    int
	// events, when set, hears every change after the cache holds it, as
	// the zombie controller's watch does.
	events predicate.Predicate
}

func newOperationCache(ops ...*arbiterv1alpha1.ConflictResolutionOperation) *operationCache {
	c := &operationCache{ops: map[types.NamespacedName]*arbiterv1alpha1.ConflictResolutionOperation{},
		byTarget: map[string]map[types.NamespacedName]*arbiterv1alpha1.ConflictResolutionOperation{}}
	for _, op := range ops {
		c.put(op.DeepCopy())
	}
	return c
}

// put stores op at a new resourceVersion, as an update the cache sees.
func (c *operationCache) put(op *arbiterv1alpha1.ConflictResolutionOperation) {
	c.rv++
	op.ResourceVersion = strconv.Itoa(c.rv)
	key := client.ObjectKeyFromObject(op)
	c.ops[key] = op
	for _, t := range op.Spec.Targets {
		k := registry.KeyOf(op.Namespace, t)
		if c.byTarget[k] == nil {
			c.byTarget[k] = map[types.NamespacedName]*arbiterv1alpha1.ConflictResolutionOperation{}
		}
		c.byTarget[k][key] = op
	}
}

// update changes a stored operation as a write to the API server would.
func (c *operationCache) update(key types.NamespacedName, change func(*arbiterv1alpha1.ConflictResolutionOperation)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.ops[key]
	op := old.DeepCopy()
	change(op)
	c.put(op)
	if c.events != nil {
		c.events.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: op})
	}
}

// add stores a new operation as its creation would.
func (c *operationCache) add(op *arbiterv1alpha1.ConflictResolutionOperation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	op = op.DeepCopy()
	c.put(op)
	if c.events != nil {
		c.events.Create(event.CreateEvent{Object: op})
	}
}

// remove deletes an operation as another client would.
func (c *operationCache) remove(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop(key)
}

// drop deletes a stored operation; c.mu must be held.
func (c *operationCache) drop(key types.NamespacedName) {
	op := c.ops[key]
	delete(c.ops, key)
	for _, t := range op.Spec.Targets {
		delete(c.byTarget[registry.KeyOf(op.Namespace, t)], key)
	}
	if c.events != nil {
		c.events.Delete(event.DeleteEvent{Object: op})
	}
}

func (c *operationCache) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for k := range c.ops {
		names = append(names, k.Name)
	}
	slices.Sort(names)
	return names
}

func (c *operationCache) targetWalks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.walks
}

func (c *operationCache) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			out, ok := obj.(*arbiterv1alpha1.ConflictResolutionOperation)
			if !ok {
				return cl.Get(ctx, key, obj, opts...)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			op, ok := c.ops[key]
			if !ok {
				return apierrors.NewNotFound(schema.GroupResource{Group: arbiterv1alpha1.GroupVersion.Group, Resource: "conflictresolutionoperations"}, key.Name)
			}
			op.DeepCopyInto(out)
			return nil
		},
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			out, ok := list.(*arbiterv1alpha1.ConflictResolutionOperationList)
			if !ok {
				return cl.List(ctx, list, opts...)
			}
			lo := (&client.ListOptions{}).ApplyOptions(opts)
			target, ok := "", lo.FieldSelector != nil
			if ok {
				target, ok = lo.FieldSelector.RequiresExactMatch(registry.TargetKey)
			}
			if !ok {
				return fmt.Errorf("operationCache answers the target index only, not %v", lo.FieldSelector)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.walks++
			// One slice of the list's length, as the cache's own List makes.
			out.Items = make([]arbiterv1alpha1.ConflictResolutionOperation, 0, len(c.byTarget[target]))
			for _, op := range c.byTarget[target] {
				out.Items = append(out.Items, *op)
			}
			return nil
		},
		Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if _, ok := obj.(*arbiterv1alpha1.ConflictResolutionOperation); !ok {
				return cl.Delete(ctx, obj, opts...)
			}
			do := (&client.DeleteOptions{}).ApplyOptions(opts)
			key := client.ObjectKeyFromObject(obj)
			c.mu.Lock()
			defer c.mu.Unlock()
			op, ok := c.ops[key]
			gr := schema.GroupResource{Group: arbiterv1alpha1.GroupVersion.Group, Resource: "conflictresolutionoperations"}
			switch {
			case !ok:
				return apierrors.NewNotFound(gr, key.Name)
			case do.Preconditions != nil && do.Preconditions.UID != nil && *do.Preconditions.UID != op.UID,
				do.Preconditions != nil && do.Preconditions.ResourceVersion != nil && *do.Preconditions.ResourceVersion != op.ResourceVersion:
				return apierrors.NewConflict(gr, key.Name, fmt.Errorf("the object changed since it was judged"))
			}
			c.drop(key)
			return nil
		},
	}
}

// historyZombie is a Rejected operation on ConfigMap target of namespace
// ns, finished age ago.
func historyZombie(ns, name, target string, age time.Duration) *arbiterv1alpha1.ConflictResolutionOperation {
	op := rejected(ns, name)
	done := metav1.NewMicroTime(time.Now().Add(-age))
	op.Status.CompletedAt = &done
	op.Spec.Targets = []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: target}}
	return op
}

// oldestFirst is n zombies on ConfigMap cm of namespace t, z-0 the oldest,
// each step younger than the last; format numbers their names.
func oldestFirst(n int, format string, step time.Duration) []*arbiterv1alpha1.ConflictResolutionOperation {
	var zombies []*arbiterv1alpha1.ConflictResolutionOperation
	for i := range n {
		zombies = append(zombies, historyZombie("t", "z-"+fmt.Sprintf(format, i), "cm", time.Duration(n-i)*step))
	}
	return zombies
}

// historyPolicy keeps zombies a day and at most limit per target.
func historyPolicy(ns, name string, limit int32) *arbiterv1alpha1.CleanupPolicy {
	return testPolicy(ns, name, func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Strategy = arbiterv1alpha1.CleanupDeferred
		s.Retention = &metav1.Duration{Duration: 24 * time.Hour}
		s.HistoryLimit = &limit
		s.MaxDeletionsPerSecond = 1000
	})
}

// judgeAll reconciles every zombie, as a policy's change queues them.
func judgeAll(tb testing.TB, r *CleanupReconciler, zombies []*arbiterv1alpha1.ConflictResolutionOperation) {
	tb.Helper()
	for _, z := range zombies {
		if _, err := r.reconcileZombie(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(z)}); err != nil {
			tb.Fatalf("judging %s: %v", z.Name, err)
		}
	}
}

// BenchmarkJudgeTargetAfterPolicyChange judges every zombie of one target
// of 10,000 after their policy changed, the policy's historyLimit far
// above them: the work an edit of the policy costs the shared workers.
func BenchmarkJudgeTargetAfterPolicyChange(b *testing.B) {
	const n = 10000
	zombies := make([]*arbiterv1alpha1.ConflictResolutionOperation, n)
	for i := range zombies {
		zombies[i] = historyZombie("t", fmt.Sprintf("z-%05d", i), "cm", time.Duration(i)*time.Second)
	}
	cache := newOperationCache(zombies...)
	r, _ := fakeCleanerWith(b, cache.funcs(), historyPolicy("t", "history", 1000000))
	b.ReportAllocs()
	for b.Loop() {
		r.governorCache.policiesChanged("t") // what the policy watch does
		judgeAll(b, r, zombies)
	}
	b.ReportMetric(float64(cache.targetWalks())/float64(b.N), "walks/op")
}

// historyCleaner is a cleaner whose operations live in an operationCache
// that tells the zombie controller's watch of every change.
func historyCleaner(tb testing.TB, ops []*arbiterv1alpha1.ConflictResolutionOperation, objs ...client.Object) (*CleanupReconciler, *operationCache, client.Client) {
	tb.Helper()
	cache := newOperationCache(ops...)
	r, c := fakeCleanerWith(tb, cache.funcs(), objs...)
	cache.events = r.historyChanges()
	return r, cache, c
}

// After a policy change, judging every zombie of a target walks the target
// once, not once per zombie, and historyLimit removes what it removed when
// each zombie walked: the oldest of the zombies the policy governs beyond
// the limit, held ones and another policy's neither counted nor removed.
func TestHistoryLimitWalksATargetOncePerChange(t *testing.T) {
	narrow := testPolicy("t", "narrow", func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Strategy, s.Retention = arbiterv1alpha1.CleanupDeferred, &metav1.Duration{Duration: 24 * time.Hour}
		s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "narrow"}}
	})
	narrow.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour)) // older: it governs its team
	history := historyPolicy("t", "history", 1000)
	history.CreationTimestamp = metav1.NewTime(time.Now())
	var zombies []*arbiterv1alpha1.ConflictResolutionOperation
	var counted []string // oldest first
	for i := range 500 {
		z := historyZombie("t", fmt.Sprintf("z-%03d", i), "cm", time.Duration(500-i)*time.Minute)
		switch {
		case i%10 == 3:
			z.Labels = map[string]string{"team": "narrow"}
		case i%25 == 0:
			z.Annotations = map[string]string{arbiterv1alpha1.KeepAnnotation: "true"}
		default:
			counted = append(counted, z.Name)
		}
		zombies = append(zombies, z)
	}
	r, cache, c := historyCleaner(t, zombies, narrow, history)
	var narrows []*arbiterv1alpha1.ConflictResolutionOperation
	for _, z := range zombies {
		if z.Labels["team"] == "narrow" {
			narrows = append(narrows, z)
		}
	}
	judgeAll(t, r, narrows)
	if walks := cache.targetWalks(); walks != 0 {
		t.Errorf("judging zombies of a policy without historyLimit walked their target %d times", walks)
	}
	judgeAll(t, r, zombies)
	if walks := cache.targetWalks(); walks != 1 {
		t.Errorf("judging the 500 zombies of a target walked it %d times, want once", walks)
	}
	if n := len(cache.names()); n != 500 {
		t.Fatalf("%d zombies left, want all 500: none is over a historyLimit of 1000", n)
	}

	// The limit lowered to 100: the policy's watch judges every zombie again.
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(history), history); err != nil {
		t.Fatal(err)
	}
	limit := int32(100)
	history.Spec.HistoryLimit = &limit
	if err := c.Update(t.Context(), history); err != nil {
		t.Fatal(err)
	}
	r.governorCache.policiesChanged("t")
	judgeAll(t, r, zombies)
	if walks := cache.targetWalks(); walks != 2 {
		t.Errorf("judging the 500 zombies of a target after their policy changed walked it %d times in all, want twice", walks)
	}
	removed := map[string]bool{}
	for _, name := range counted[:len(counted)-int(limit)] {
		removed[name] = true
	}
	var want []string
	for _, z := range zombies {
		if !removed[z.Name] {
			want = append(want, z.Name)
		}
	}
	if got := cache.names(); !slices.Equal(got, want) {
		t.Errorf("%d zombies left, want %d: the %d newest the policy governs, %d held and %d of another policy", len(got), len(want),
			limit, 500/25, 500/10)
	}
}

// A finding is kept only while the target's operations stay as walked:
// historyLimit's own removals leave it good, any other change makes the
// next judgement walk again, so that no zombie goes that the limit keeps
// by then.
func TestHistoryFindingFollowsChangesOnItsTarget(t *testing.T) {
	zombies := oldestFirst(6, "%d", time.Minute)
	p := historyPolicy("t", "history", 3)
	p.Spec.MaxDeletionsPerSecond = 1
	r, cache, _ := historyCleaner(t, zombies, p)
	clk := clocktesting.NewFakeClock(time.Now())
	r.Clock = clk
	left := func(want ...string) {
		t.Helper()
		if got := cache.names(); !slices.Equal(got, want) {
			t.Fatalf("zombies left: %v, want %v", got, want)
		}
	}

	// z-0, z-1 and z-2 are over the limit: one token goes to z-0, and z-1
	// waits for the next.
	judgeAll(t, r, zombies)
	left("z-1", "z-2", "z-3", "z-4", "z-5")
	// Someone else deletes z-5: the limit now keeps z-2.
	cache.remove(client.ObjectKeyFromObject(zombies[5]))
	clk.Step(time.Second)
	judgeAll(t, r, zombies)
	left("z-2", "z-3", "z-4")
	if walks := cache.targetWalks(); walks != 2 {
		t.Errorf("the target was walked %d times, want twice: once at first, once after z-5 went", walks)
	}
	clk.Step(time.Minute)
	judgeAll(t, r, zombies)
	left("z-2", "z-3", "z-4")
	if walks := cache.targetWalks(); walks != 2 {
		t.Errorf("the target was walked %d times, want twice: the limit's own removals change no finding", walks)
	}

	// z-2 kept: a new zombie is then the third the limit counts.
	cache.update(client.ObjectKeyFromObject(zombies[2]), func(op *arbiterv1alpha1.ConflictResolutionOperation) {
		op.Annotations = map[string]string{arbiterv1alpha1.KeepAnnotation: "true"}
	})
	z6 := historyZombie("t", "z-6", "cm", 0)
	cache.add(z6)
	judgeAll(t, r, append(zombies, z6))
	left("z-2", "z-3", "z-4", "z-6")
}

// historyPerZombie is historyLimit as enforced before findings were kept:
// every zombie judged walks each of its targets.
func historyPerZombie(t *testing.T, r *CleanupReconciler, key types.NamespacedName) {
	t.Helper()
	ctx := t.Context()
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := r.Client.Get(ctx, key, op); apierrors.IsNotFound(err) {
		return
	} else if err != nil {
		t.Fatal(err)
	}
	cands, err := r.governors(ctx, op.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	gov := r.governing(op, cands)
	if gov == nil || !cleanup.Judge(gov, op).Zombie || gov.Spec.HistoryLimit == nil {
		return
	}
	for _, target := range op.Spec.Targets {
		ops, err := registry.OnTarget(ctx, r.Client, registry.KeyOf(op.Namespace, target))
		if err != nil {
			t.Fatal(err)
		}
		for _, z := range cleanup.OverHistory(gov, cands, ops) {
			wait, err := r.remove(ctx, gov, z, "test")
			if err != nil {
				t.Fatalf("removing %s: %v", z.Name, err)
			}
			if wait > 0 {
				return
			}
		}
	}
}

// Judging a namespace's zombies in any order leaves the same zombies as
// when every zombie walked its targets, round after round of deletion
// tokens: over random policies (selectors, limits, phases, rates), zombies
// on one or two of four targets, held ones, completion times that tie, and
// a zombie deleted by someone else between rounds.
func TestHistoryLimitLeavesWhatPerZombieWalksLeft(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		limit := func() *int32 {
			if rng.IntN(4) == 0 {
				return nil
			}
			l := int32(rng.IntN(6))
			return &l
		}
		first := historyPolicy("t", "first", 0)
		first.Spec.HistoryLimit = limit()
		first.Spec.MaxDeletionsPerSecond = 1 + int32(rng.IntN(3))
		first.CreationTimestamp = metav1.NewTime(time.Now().Add(-2 * time.Hour))
		if rng.IntN(2) == 0 {
			first.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
		}
		second := historyPolicy("t", "second", 0)
		second.Spec.HistoryLimit = limit()
		second.Spec.MaxDeletionsPerSecond = 1 + int32(rng.IntN(3))
		second.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
		second.Spec.Phases = append(second.Spec.Phases, "Cancelled")

		var zombies []*arbiterv1alpha1.ConflictResolutionOperation
		base := time.Now()
		for i := range 5 + rng.IntN(36) {
			z := historyZombie("t", fmt.Sprintf("z-%02d", i), fmt.Sprint("cm-", rng.IntN(4)), 0)
			if rng.IntN(3) == 0 {
				z.Spec.Targets = append(z.Spec.Targets, arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "cm-x"})
			}
			done := metav1.NewMicroTime(base.Add(-time.Duration(rng.IntN(10)) * time.Minute))
			z.Status.CompletedAt = &done
			z.Status.Phase = []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
				arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded}[rng.IntN(4)]
			if z.Status.Phase == arbiterv1alpha1.PhaseFailed && rng.IntN(3) == 0 {
				z.Status.Reason = arbiterv1alpha1.ReasonRollbackFailed
			}
			if rng.IntN(10) == 0 {
				z.Annotations = map[string]string{arbiterv1alpha1.KeepAnnotation: "true"}
			}
			z.Labels = map[string]string{"team": []string{"a", "b"}[rng.IntN(2)]}
			zombies = append(zombies, z)
		}
		order := slices.Clone(zombies)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

		r, cache, _ := historyCleaner(t, zombies, first.DeepCopy(), second.DeepCopy())
		ref, refCache, _ := historyCleaner(t, zombies, first.DeepCopy(), second.DeepCopy())
		clk, refClk := clocktesting.NewFakeClock(base), clocktesting.NewFakeClock(base)
		r.Clock, ref.Clock = clk, refClk
		for round := range 4 {
			judgeAll(t, r, order)
			for _, z := range order {
				historyPerZombie(t, ref, client.ObjectKeyFromObject(z))
			}
			got, want := cache.names(), refCache.names()
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d, round %d: %v left, want %v as when each zombie walked its targets", seed, round, got, want)
			}
			if round == 1 && len(got) > 0 {
				gone := types.NamespacedName{Namespace: "t", Name: got[rng.IntN(len(got))]}
				cache.remove(gone)
				refCache.remove(gone)
			}
			clk.Step(time.Second)
			refClk.Step(time.Second)
		}
	}
}

// Sixteen workers judging a target's zombies together after their policy
// changed wait for one walk instead of walking each, and remove what one
// worker would.
func TestHistoryLimitWalksATargetOnceWhenWorkersJudgeTogether(t *testing.T) {
	var zombies []*arbiterv1alpha1.ConflictResolutionOperation
	for i := range 500 {
		zombies = append(zombies, historyZombie("t", fmt.Sprintf("z-%03d", i), "cm", time.Duration(500-i)*time.Minute))
	}
	r, cache, _ := historyCleaner(t, zombies, historyPolicy("t", "history", 100))
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < len(zombies); i += 16 {
				if _, err := r.reconcileZombie(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(zombies[i])}); err != nil {
					t.Errorf("judging %s: %v", zombies[i].Name, err)
				}
			}
		})
	}
	wg.Wait()
	// A worker that found no history kept for the target, racing another
	// that made it, may walk with its own: a handful at most, never a walk
	// per zombie.
	if walks := cache.targetWalks(); walks > 3 {
		t.Errorf("16 workers judging the 500 zombies of a target walked it %d times, want once or so", walks)
	}
	var want []string
	for _, z := range zombies[400:] {
		want = append(want, z.Name)
	}
	if got := cache.names(); !slices.Equal(got, want) {
		t.Errorf("%d zombies left, want the 100 newest", len(got))
	}
}

func expectLeft(t *testing.T, cache *operationCache, want ...string) {
	t.Helper()
	if got := cache.names(); !slices.Equal(got, want) {
		t.Errorf("zombies left: %v, want %v", got, want)
	}
}

// A finding of a policy that no longer governs must not foresee a
// deletion for the policy that does: a zombie deleted by someone else
// makes the current finding stale, and the limit keeps what it now keeps.
func TestAFindingOfAPolicyGoneForeseesNothing(t *testing.T) {
	zombies := oldestFirst(6, "%d", time.Minute)
	a := historyPolicy("t", "a", 1)
	a.Spec.MaxDeletionsPerSecond = 1
	a.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	b := historyPolicy("t", "b", 3)
	b.Spec.MaxDeletionsPerSecond = 1
	b.CreationTimestamp = metav1.NewTime(time.Now())
	r, cache, c := historyCleaner(t, zombies, a, b)
	clk := clocktesting.NewFakeClock(time.Now())
	r.Clock = clk
	judgeAll(t, r, zombies)
	expectLeft(t, cache, "z-1", "z-2", "z-3", "z-4", "z-5")
	// Policy a deleted: b governs, limit 3.
	if err := c.Delete(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	r.governorCache.policiesChanged("t")
	judgeAll(t, r, zombies[1:])
	expectLeft(t, cache, "z-2", "z-3", "z-4", "z-5")
	// A user deletes z-4 (listed only in a's stale finding): 3 left, the limit.
	cache.remove(client.ObjectKeyFromObject(zombies[4]))
	clk.Step(2 * time.Second)
	judgeAll(t, r, []*arbiterv1alpha1.ConflictResolutionOperation{zombies[2], zombies[3], zombies[5]})
	expectLeft(t, cache, "z-2", "z-3", "z-5")
}

// Findings of policies that no longer govern a target go: a tenant
// renaming its policies does not grow what is kept of a target.
func TestFindingsOfPoliciesGoneAreDropped(t *testing.T) {
	zombies := []*arbiterv1alpha1.ConflictResolutionOperation{
		historyZombie("t", "z-0", "cm", 2*time.Minute), historyZombie("t", "z-1", "cm", time.Minute)}
	p0 := historyPolicy("t", "p-0", 0)
	p0.Spec.DryRun = true
	r, _, c := historyCleaner(t, zombies, p0)
	prev := client.Object(p0)
	for i := 1; i <= 200; i++ {
		if err := c.Delete(t.Context(), prev); err != nil {
			t.Fatal(err)
		}
		p := historyPolicy("t", fmt.Sprint("p-", i), 0)
		p.Spec.DryRun = true
		if err := c.Create(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		prev = p
		r.governorCache.policiesChanged("t")
		judgeAll(t, r, zombies)
	}
	th := r.history.target(registry.KeyOf("t", zombies[0].Spec.Targets[0]), false)
	th.mu.Lock()
	n := len(th.byPolicy)
	th.mu.Unlock()
	if n > 1 {
		t.Errorf("one target holds %d findings after 200 policy renames, one policy governs it", n)
	}
}

// A met zombie whose policy turns Deferred drops its met record at once,
// rather than hold a share of the records for the new retention.
func TestAMetRecordGoesWhenItsPolicyIsNoLongerLazy(t *testing.T) {
	z := historyZombie("t", "z", "cm", 2*time.Hour)
	lazy := testPolicy("t", "p", func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Strategy = arbiterv1alpha1.CleanupLazy
		s.Retention = &metav1.Duration{Duration: time.Hour}
		s.MaxDeletionsPerSecond = 1
	})
	r, _, c := historyCleaner(t, []*arbiterv1alpha1.ConflictResolutionOperation{z}, lazy)
	// Met due, as enqueueMet records it; the worker has not reached it yet.
	r.met.Add(client.ObjectKeyFromObject(z), z.UID, time.Now())
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(lazy), lazy); err != nil {
		t.Fatal(err)
	}
	lazy.Spec.Strategy = arbiterv1alpha1.CleanupDeferred
	lazy.Spec.Retention = &metav1.Duration{Duration: 365 * 24 * time.Hour}
	if err := c.Update(t.Context(), lazy); err != nil {
		t.Fatal(err)
	}
	r.governorCache.policiesChanged("t")
	res, err := r.reconcileZombie(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(z)})
	if err != nil {
		t.Fatal(err)
	}
	if n := r.met.Len(); n != 0 {
		t.Errorf("%d met records left after the zombie left Lazy governance (requeue in %s)", n, res.RequeueAfter)
	}
}

// While deletion tokens are scarce, a target's zombies over the limit wait
// each for its own token: the queue is driven here as the controller's is
// (requeues at their time, turns handed over at once), and clearing 190
// zombies at 1 deletion/s costs a few judgements per removal, not one per
// zombie still over the limit at each token.
func TestHistoryLimitWaitsForTokensWithoutAHerd(t *testing.T) {
	const n, limit = 200, 10
	zombies := oldestFirst(n, "%04d", time.Second)
	p := historyPolicy("t", "history", limit)
	p.Spec.MaxDeletionsPerSecond = 1
	r, cache, _ := historyCleaner(t, zombies, p)
	start := time.Now()
	clk := clocktesting.NewFakeClock(start)
	r.Clock = clk
	type due struct {
		at  time.Time
		key types.NamespacedName
	}
	// As the controller's queue: an item added now while it waits for a
	// later requeue is handled now, and again then.
	var queue []due
	push := func(at time.Time, key types.NamespacedName) { queue = append(queue, due{at, key}) }
	for _, z := range zombies {
		push(clk.Now(), client.ObjectKeyFromObject(z))
	}
	judgements := 0
	for len(queue) > 0 && judgements < 20*n {
		slices.SortStableFunc(queue, func(a, b due) int { return a.at.Compare(b.at) })
		next := queue[0]
		if next.at.Sub(start) > time.Hour {
			break // the rest wait for their day's retention
		}
		queue = queue[1:]
		if next.at.After(clk.Now()) {
			clk.SetTime(next.at)
		}
		res, err := r.reconcileZombie(t.Context(), reconcile.Request{NamespacedName: next.key})
		if err != nil {
			t.Fatal(err)
		}
		judgements++
		if res.RequeueAfter > 0 {
			push(clk.Now().Add(res.RequeueAfter), next.key)
		}
		for len(r.historyTurns) > 0 {
			push(clk.Now(), client.ObjectKeyFromObject((<-r.historyTurns).Object))
		}
	}
	if left := len(cache.names()); left != limit {
		t.Fatalf("%d zombies left after %d judgements, want the newest %d", left, judgements, limit)
	}
	if judgements > 5*n {
		t.Fatalf("clearing %d zombies over the limit took %d judgements, want at most %d", n-limit, judgements, 5*n)
	}
	t.Logf("%d judgements to clear %d zombies over the limit at 1 deletion/s", judgements, n-limit)
}
