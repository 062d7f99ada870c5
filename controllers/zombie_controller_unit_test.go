package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientevents "k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

func fakeCleaner(t *testing.T, objs ...client.Object) (*CleanupReconciler, client.Client) {
	t.Helper()
	return fakeCleanerWith(t, interceptor.Funcs{}, objs...)
}

// fakeCleanerWith is fakeCleaner with calls to the fake API intercepted.
func fakeCleanerWith(t testing.TB, funcs interceptor.Funcs, objs ...client.Object) (*CleanupReconciler, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := arbiterv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(funcs).
		WithStatusSubresource(&arbiterv1alpha1.CleanupPolicy{}, &arbiterv1alpha1.ClusterCleanupPolicy{})
	// The manager's own indexes: lazy cleanup lists a target's operations.
	if err := registry.Setup(t.Context(), builderIndexer{b}); err != nil {
		t.Fatal(err)
	}
	c := b.Build()
	// A recorder without a channel drops events: these tests make many.
	return newCleanupReconciler(c, &clientevents.FakeRecorder{}, 1, DefaultStrategyNone), c
}

// builderIndexer registers the manager's indexes (registry.Setup) with a
// fake client being built.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	i.b.WithIndex(obj, field, extract)
	return nil
}

func rejected(ns, name string) *arbiterv1alpha1.ConflictResolutionOperation {
	done := metav1.NewMicroTime(time.Now().Add(-time.Hour))
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Status:     arbiterv1alpha1.ConflictResolutionOperationStatus{Phase: arbiterv1alpha1.PhaseRejected, CompletedAt: &done},
	}
}

func testPolicy(ns, name string, mutate func(*arbiterv1alpha1.CleanupPolicySpec)) *arbiterv1alpha1.CleanupPolicy {
	p := &arbiterv1alpha1.CleanupPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec: arbiterv1alpha1.CleanupPolicySpec{Strategy: arbiterv1alpha1.CleanupImmediate,
			Phases: []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"}, MaxDeletionsPerSecond: 200},
	}
	if mutate != nil {
		mutate(&p.Spec)
	}
	return p
}

// A dryRun policy counts each zombie once, and what it remembers for that
// stays bounded however many zombies it reports, and goes with them.
func TestDryRunReportsAreBoundedAndForgotten(t *testing.T) {
	r, _ := fakeCleaner(t)
	p := testPolicy("a", "dry", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.DryRun = true })
	n := reportedRecords + 100
	for i := range n {
		if wait, err := r.remove(t.Context(), p, rejected("a", fmt.Sprintf("z-%d", i)), "test"); wait != 0 || err != nil {
			t.Fatalf("dryRun removal: %v, %v", wait, err)
		}
	}
	if got := r.reported.Len(); got > reportedRecords {
		t.Errorf("%d reported zombies remembered, want at most %d", got, reportedRecords)
	}
	last := rejected("a", fmt.Sprintf("z-%d", n-1))
	if _, err := r.remove(t.Context(), p, last, "test"); err != nil {
		t.Fatal(err)
	}
	if got := r.trackers[client.ObjectKeyFromObject(p)].reported; got != int64(n) {
		t.Errorf("reported %d, want %d: each zombie counted once", got, n)
	}

	// Gone (the fake client has none of them): forgotten.
	if _, err := r.reconcileZombie(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(last)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.reported.Get(client.ObjectKeyFromObject(last)); ok {
		t.Error("a deleted zombie is still remembered as reported")
	}
}

// A tracker lives as long as its policy: dropped when the policy's report
// finds it gone, or by the sweep when a removal re-created it after that;
// the operator-wide default's once its bucket is full again.
func TestTrackersOfDeletedPoliciesAreDropped(t *testing.T) {
	live := testPolicy("a", "live", nil)
	r, _ := fakeCleaner(t, live)
	gone := testPolicy("z", "gone", nil)
	idleDefault := cleanup.DefaultPolicy("b", arbiterv1alpha1.CleanupImmediate)
	busyDefault := cleanup.DefaultPolicy("c", arbiterv1alpha1.CleanupImmediate)
	for _, p := range []*arbiterv1alpha1.CleanupPolicy{live, gone, idleDefault, busyDefault} {
		r.tracker(p)
	}
	r.trackers[client.ObjectKeyFromObject(busyDefault)].limiter.AllowN(time.Now(), 10)

	if _, err := r.reconcileNamespace(t.Context(), namespaceRequest(gone.Namespace)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.trackers[client.ObjectKeyFromObject(gone)]; ok {
		t.Error("the tracker of a deleted policy outlived its report")
	}

	r.tracker(gone) // a removal that raced the policy's deletion
	if err := r.sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	var kept []string
	for k := range r.trackers {
		kept = append(kept, k.String())
	}
	if len(kept) != 2 || r.trackers[client.ObjectKeyFromObject(live)] == nil || r.trackers[client.ObjectKeyFromObject(busyDefault)] == nil {
		t.Errorf("trackers after the sweep: %v, want a/live and c/%s", kept, cleanup.DefaultPolicyName)
	}
}

// A removal over the policy's rate limit deletes nothing and returns how
// long to wait, instead of waiting, keeping its reservation: asked again, it waits for the same token,
// and the next zombie queues behind it.
func TestRateLimitedRemovalNeverWaits(t *testing.T) {
	a, b, c := rejected("a", "first"), rejected("a", "second"), rejected("a", "third")
	r, cl := fakeCleaner(t, a, b, c)
	p := testPolicy("a", "slow", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.MaxDeletionsPerSecond = 1 })

	if wait, err := r.remove(t.Context(), p, a, "test"); wait != 0 || err != nil {
		t.Fatalf("first removal: %v, %v; want it done", wait, err)
	}
	wait2, err := r.remove(t.Context(), p, b, "test")
	if err != nil || wait2 <= 0 || wait2 > time.Second {
		t.Fatalf("second removal: %v, %v; want a wait of at most a second", wait2, err)
	}
	again, _ := r.remove(t.Context(), p, b, "test")
	if again > wait2 {
		t.Errorf("asked again, the second waits %v, more than its first %v: its token was not kept", again, wait2)
	}
	wait3, _ := r.remove(t.Context(), p, c, "test")
	if wait3 <= again {
		t.Errorf("the third waits %v, not behind the second's %v", wait3, again)
	}
	for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{b, c} {
		if err := cl.Get(t.Context(), client.ObjectKeyFromObject(op), op); err != nil {
			t.Errorf("%s removed before its token: %v", op.Name, err)
		}
	}

	// A zombie that goes gives its token back.
	r.forget(client.ObjectKeyFromObject(c))
	if _, ok := r.tickets[client.ObjectKeyFromObject(c)]; ok {
		t.Error("a forgotten zombie keeps its token")
	}
}

// A census tells a ClusterCleanupPolicy to sum its tallies again when what
// it found there changed, not when its zombies only aged: the policy's own
// timer follows ages.
func TestCensusTellsClusterPoliciesWhatChanged(t *testing.T) {
	r, _ := fakeCleaner(t)
	platform := types.NamespacedName{Name: "platform"}
	census := func(zombies int, age time.Duration) *namespaceCensus {
		return &namespaceCensus{census: cleanup.Census{
			platform:                       {UID: "uid-platform", Observation: cleanup.Observation{Zombies: zombies, OldestZombieAge: age}},
			{Namespace: "a", Name: "team"}: {UID: "uid-team", Observation: cleanup.Observation{Zombies: zombies, OldestZombieAge: age}},
		}}
	}
	told := func() []string {
		var names []string
		for len(r.clusterReportsDue) > 0 {
			names = append(names, (<-r.clusterReportsDue).Object.Name)
		}
		return names
	}
	r.storeCensus("a", census(3, time.Minute))
	if got := told(); fmt.Sprint(got) != "[platform]" {
		t.Errorf("a first census told %v, want [platform] (and no CleanupPolicy)", got)
	}
	r.storeCensus("a", census(3, 2*time.Minute))
	if got := told(); len(got) != 0 {
		t.Errorf("zombies that only aged told %v", got)
	}
	r.storeCensus("a", census(2, 2*time.Minute))
	if got := told(); fmt.Sprint(got) != "[platform]" {
		t.Errorf("a zombie gone told %v, want [platform]", got)
	}
	r.storeCensus("a", nil)
	if got := told(); fmt.Sprint(got) != "[platform]" {
		t.Errorf("a namespace left without policies told %v, want [platform]", got)
	}
}

// Every removal asks for its policy's report: a zombie removed before any
// census counted it changes no tally, and the census its delete event
// brings may read the tracker before the removal is counted. Without the
// request, the report would wait for its timer.
func TestRemovalAsksForItsPolicysReport(t *testing.T) {
	inCluster, inTeam := rejected("a", "platform-zombie"), rejected("a", "team-zombie")
	r, _ := fakeCleaner(t, inCluster, inTeam)
	cp := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "platform", UID: "uid-platform"}}
	cp.Spec.Strategy, cp.Spec.MaxDeletionsPerSecond = arbiterv1alpha1.CleanupImmediate, 100
	team := testPolicy("a", "team", nil)

	if wait, err := r.remove(t.Context(), cleanup.ClusterView(cp), inCluster, "test"); wait != 0 || err != nil {
		t.Fatalf("removal under the cluster policy: %v, %v; want it done", wait, err)
	}
	if len(r.clusterReportsDue) != 1 || (<-r.clusterReportsDue).Object.Name != "platform" {
		t.Error("a removal under a ClusterCleanupPolicy did not ask for its report")
	}
	if wait, err := r.remove(t.Context(), team, inTeam, "test"); wait != 0 || err != nil {
		t.Fatalf("removal under the CleanupPolicy: %v, %v; want it done", wait, err)
	}
	if len(r.reportsDue) != 1 || (<-r.reportsDue).Object.Name != "team" {
		t.Error("a removal under a CleanupPolicy did not ask for its report")
	}
	// Gone already: arbiter removed nothing, and nothing changed to report.
	if _, err := r.remove(t.Context(), team, inTeam, "test"); err != nil {
		t.Fatal(err)
	}
	if len(r.reportsDue) != 0 {
		t.Error("a zombie found gone asked for a report")
	}
}

// A ClusterCleanupPolicy has one deletion budget for all its namespaces, and
// none shared with a CleanupPolicy of the same name.
func TestClusterPolicyHasOneBudgetForAllItsNamespaces(t *testing.T) {
	inA, inB, mine := rejected("a", "first"), rejected("b", "second"), rejected("a", "mine")
	r, _ := fakeCleaner(t, inA, inB, mine)
	cp := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "slow", UID: "uid-cluster-slow"}}
	cp.Spec.Strategy, cp.Spec.MaxDeletionsPerSecond = arbiterv1alpha1.CleanupImmediate, 1
	namesake := testPolicy("a", "slow", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.MaxDeletionsPerSecond = 1 })

	// Each judgement gathers its own view of the cluster policy.
	if wait, err := r.remove(t.Context(), cleanup.ClusterView(cp), inA, "test"); wait != 0 || err != nil {
		t.Fatalf("first removal: %v, %v; want it done", wait, err)
	}
	if wait, err := r.remove(t.Context(), cleanup.ClusterView(cp), inB, "test"); err != nil || wait <= 0 {
		t.Errorf("a removal in another namespace: %v, %v; want it to wait for the policy's one bucket", wait, err)
	}
	if wait, err := r.remove(t.Context(), namesake, mine, "test"); wait != 0 || err != nil {
		t.Errorf("the namesake CleanupPolicy's removal: %v, %v; want it done from its own bucket", wait, err)
	}
}

// A ClusterCleanupPolicy's failure rate is kept per namespace too, for the
// health of each namespace it lists.
func TestClusterPolicyFailuresAreKeptPerNamespace(t *testing.T) {
	inA, inB := rejected("a", "fine"), rejected("b", "stuck")
	r, _ := fakeCleanerWith(t, interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if obj.GetNamespace() == "b" {
				return apierrors.NewInternalError(errors.New("etcd is away"))
			}
			return c.Delete(ctx, obj, opts...)
		},
	}, inA, inB)
	cp := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "platform", UID: "uid-platform"}}
	cp.Spec.Strategy, cp.Spec.MaxDeletionsPerSecond = arbiterv1alpha1.CleanupImmediate, 100
	view := cleanup.ClusterView(cp)
	if _, err := r.remove(t.Context(), view, inA, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.remove(t.Context(), view, inB, "test"); err == nil {
		t.Fatal("a failed delete reported no error")
	}
	_, f := r.figures(view, time.Now())
	if f.FailureRatePercent != 50 || fmt.Sprint(f.NamespaceFailureRatePercent) != "map[a:0 b:100]" {
		t.Errorf("failure rates %d%% and %v, want 50%% over the policy, a 0 and b 100", f.FailureRatePercent, f.NamespaceFailureRatePercent)
	}
}

// One tenant meeting its targets over and over holds one meeting per
// target in the channel every namespace shares, not the whole of it: a
// meeting in another namespace still gets in. Once its meeting is taken
// from the channel, a target may be met again.
func TestRepeatedMeetingsDoNotCrowdOutOtherNamespaces(t *testing.T) {
	r, _ := fakeCleaner(t)
	hostile := rejected("hostile", "hammer")
	for i := range 16 {
		hostile.Spec.Targets = append(hostile.Spec.Targets, arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: fmt.Sprint("cm-", i)})
	}
	for range 2 * cap(r.meetings) {
		r.MeetTargets(hostile)
	}
	if len(r.meetings) != 1 {
		t.Fatalf("%d meetings of the same 16 targets wait, want 1", len(r.meetings))
	}
	bank := rejected("bank", "credit")
	bank.Spec.Targets = []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm-0"}}
	r.MeetTargets(bank)
	if len(r.meetings) != 2 {
		t.Fatalf("another namespace's meeting was dropped: %d waiting, want 2", len(r.meetings))
	}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	r.enqueueMet(t.Context(), <-r.meetings, q)
	r.MeetTargets(hostile)
	if len(r.meetings) != 2 {
		t.Fatalf("a target whose meeting was handled cannot be met again: %d waiting, want 2", len(r.meetings))
	}
	if got := (<-r.meetings).Object.Name; got != "credit" {
		t.Fatalf("first meeting waiting is %s, want bank's credit", got)
	}
}

// Zombies are judged against candidates kept per namespace: judging many
// zombies lists a namespace's policies once, not once per zombie, and a
// change of a policy's spec, a namespace's labels or a cluster policy
// (policiesChanged, which the zombie controller's watches call) makes the
// next judgement gather them afresh.
func TestZombiesAreJudgedAgainstKeptCandidatesUntilAPolicyChanges(t *testing.T) {
	lists := 0
	r, c := fakeCleanerWith(t, interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if _, ok := list.(*arbiterv1alpha1.CleanupPolicyList); ok {
			lists++
		}
		return c.List(ctx, list, opts...)
	}}, testPolicy("a", "first", nil))
	policies := func(namespace string) []string {
		t.Helper()
		cands, err := r.governors(t.Context(), namespace)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range cands.Policies() {
			names = append(names, p.Name)
		}
		return names
	}
	for range 1000 {
		policies("a")
	}
	if lists != 1 {
		t.Fatalf("1000 judgements listed the namespace's policies %d times, want 1", lists)
	}
	second := testPolicy("a", "second", nil)
	second.CreationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
	if err := c.Create(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	r.governorCache.policiesChanged("b") // another namespace's change
	if got := policies("a"); len(got) != 1 {
		t.Fatalf("a change in namespace b renewed namespace a's candidates: %v", got)
	}
	r.governorCache.policiesChanged("a")
	if got := policies("a"); len(got) != 2 {
		t.Fatalf("after a's policies changed, candidates %v; want first and second", got)
	}
	if err := c.Delete(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	r.governorCache.policiesChanged("") // a ClusterCleanupPolicy changed: every namespace
	if got := policies("a"); len(got) != 1 {
		t.Fatalf("after a cluster policy changed, candidates %v; want first alone", got)
	}
}

// A namespace deleted and created again under the same name is judged
// against its new labels, not the candidates kept for the old one: the
// namespace watch's Delete and Create events drop them.
func TestARecreatedNamespaceIsNotJudgedAgainstTheOldOnesCandidates(t *testing.T) {
	prod := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t", Labels: map[string]string{"env": "prod"}}}
	cp := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: "prod-only"},
		Spec: arbiterv1alpha1.ClusterCleanupPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}}
	cp.Spec.Strategy = arbiterv1alpha1.CleanupImmediate
	r, c := fakeCleaner(t, prod, cp)
	policies := func() int {
		t.Helper()
		cands, err := r.governors(t.Context(), "t")
		if err != nil {
			t.Fatal(err)
		}
		return len(cands.Policies())
	}
	if n := policies(); n != 1 {
		t.Fatalf("namespace t labelled env=prod has %d candidates, want the cluster policy", n)
	}
	events := r.namespaceEvents()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	if err := c.Delete(t.Context(), prod); err != nil {
		t.Fatal(err)
	}
	events.Delete(t.Context(), event.DeleteEvent{Object: prod}, q)
	dev := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t", Labels: map[string]string{"env": "dev"}}}
	if err := c.Create(t.Context(), dev); err != nil {
		t.Fatal(err)
	}
	events.Create(t.Context(), event.CreateEvent{Object: dev}, q)
	if n := policies(); n != 0 {
		t.Fatalf("namespace t created again with env=dev has %d candidates, want none", n)
	}
}

// A cluster that creates and deletes namespaces all day does not grow the
// governor cache for the manager's life: the numbers it keeps for deleted
// namespaces are bounded, and candidates gathered before they were dropped
// are not kept.
func TestNamespaceChurnKeepsTheGovernorCacheBounded(t *testing.T) {
	r, _ := fakeCleaner(t, testPolicy("a", "first", nil))
	if _, err := r.governors(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	g := &r.governorCache
	for i := range 3 * maxNamespaceChanges {
		g.namespaceGone(fmt.Sprintf("ci-%d", i))
	}
	if n := len(g.changed); n > maxNamespaceChanges {
		t.Fatalf("after %d namespaces were deleted, %d change numbers are kept; want at most %d", 3*maxNamespaceChanges, n, maxNamespaceChanges)
	}
	if _, kept := g.kept["a"]; kept {
		t.Fatal("namespace a's candidates outlived the numbers they were gathered at")
	}
	cands, err := r.governors(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cands.Policies()); n != 1 {
		t.Fatalf("namespace a gathered afresh has %d candidates, want 1", n)
	}
}

// Dry-run reports count in cleanedTotal, as the README says, but never in
// the Cleaned event: a policy switched out of dryRun before its report
// announces as removed only what it removed.
func TestAPolicySwitchedOutOfDryRunAnnouncesOnlyWhatItRemoved(t *testing.T) {
	zombies := []*arbiterv1alpha1.ConflictResolutionOperation{rejected("a", "z1"), rejected("a", "z2"), rejected("a", "z3"), rejected("a", "real")}
	p := testPolicy("a", "audit", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.DryRun = true })
	objs := []client.Object{p}
	for _, z := range zombies {
		objs = append(objs, z)
	}
	r, c := fakeCleaner(t, objs...)
	rec := clientevents.NewFakeRecorder(16)
	r.Recorder = rec
	for _, z := range zombies[:3] {
		if _, err := r.remove(t.Context(), p, z, "test"); err != nil {
			t.Fatal(err)
		}
	}
	p.Spec.DryRun = false // switched before the report
	if _, err := r.remove(t.Context(), p, zombies[3], "test"); err != nil {
		t.Fatal(err)
	}
	orig := p.DeepCopy()
	tr, f := r.figures(p, time.Now())
	p.Status.CleanedTotal += f.Removed + f.Reported
	if err := r.writeReport(t.Context(), p, orig, tr, f); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(p), p); err != nil || p.Status.CleanedTotal != 4 {
		t.Fatalf("cleanedTotal %d (%v), want the 3 reported and the 1 removed", p.Status.CleanedTotal, err)
	}
	close(rec.Events)
	var cleaned []string
	for e := range rec.Events {
		if strings.Contains(e, "Cleaned") {
			cleaned = append(cleaned, e)
		}
	}
	if len(cleaned) != 1 || !strings.Contains(cleaned[0], "Removed 1 zombie(s)") {
		t.Fatalf("Cleaned events %q, want one saying 1 removed", cleaned)
	}
	if _, f := r.figures(p, time.Now()); f.Reported != 0 || f.Removed != 0 {
		t.Fatalf("after the report, %d reported and %d removed left to report, want none", f.Reported, f.Removed)
	}
}

// zombieOn is a Rejected operation, finished an hour ago, on ConfigMap target.
func zombieOn(ns, name, target string) *arbiterv1alpha1.ConflictResolutionOperation {
	z := rejected(ns, name)
	z.Spec.Targets = []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: target}}
	return z
}

// meetingOf is what MeetTargets sends when an operation in ns meets target.
func meetingOf(ns, target string) event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation] {
	return event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]{Object: zombieOn(ns, "meets-"+target, target)}
}

func lazyPolicy(ns string, perSecond int32) *arbiterv1alpha1.CleanupPolicy {
	return testPolicy(ns, "lazy", func(s *arbiterv1alpha1.CleanupPolicySpec) {
		s.Strategy, s.Retention, s.MaxDeletionsPerSecond = arbiterv1alpha1.CleanupLazy, &metav1.Duration{Duration: time.Second}, perSecond
	})
}

// A tenant meeting more due zombies than arbiter keeps met records for
// cannot make another namespace's met zombie lose its meeting: the victim's
// zombies, one met before the tenant's flood and one after it, are still
// removed when a worker reaches them, though the tenant meets its target
// again meanwhile. The records stay bounded all the same.
func TestLazyMeetingsOfOneNamespaceDoNotDropAnothersMetZombie(t *testing.T) {
	before, after := zombieOn("v", "ledger-zombie", "ledger"), zombieOn("v", "journal-zombie", "journal")
	objs := []client.Object{lazyPolicy("v", 200), before, after, lazyPolicy("a", 1)}
	for i := range metRecords + 100 {
		objs = append(objs, zombieOn("a", fmt.Sprint("hot-", i), "hot"))
	}
	r, c := fakeCleaner(t, objs...)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()

	r.enqueueMet(t.Context(), meetingOf("v", "ledger"), q)
	r.enqueueMet(t.Context(), meetingOf("a", "hot"), q)
	r.enqueueMet(t.Context(), meetingOf("v", "journal"), q)
	r.enqueueMet(t.Context(), meetingOf("a", "hot"), q)
	if n := r.met.Len(); n > metRecords {
		t.Errorf("%d met records kept, want at most %d", n, metRecords)
	}
	for _, z := range []*arbiterv1alpha1.ConflictResolutionOperation{before, after} {
		if _, err := r.reconcileZombie(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(z)}); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(z), &arbiterv1alpha1.ConflictResolutionOperation{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace v's %s, met due, survived namespace a's meetings of %d zombies (get: %v)", z.Name, metRecords+100, err)
		}
	}
}

// Meeting a target again while its due zombies wait for a worker or for
// their deletion token adds nothing: the queue does not grow, and each
// zombie keeps the record of its first meeting.
func TestMeetingATargetAgainAddsNothingForZombiesAlreadyMet(t *testing.T) {
	const zombies = 50
	objs := []client.Object{lazyPolicy("a", 1)}
	for i := range zombies {
		objs = append(objs, zombieOn("a", fmt.Sprint("hot-", i), "hot"))
	}
	r, c := fakeCleaner(t, objs...)
	clock := clocktesting.NewFakeClock(time.Now())
	r.Clock = clock
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()

	firstMet := clock.Now()
	r.enqueueMet(t.Context(), meetingOf("a", "hot"), q)
	if q.Len() != zombies {
		t.Fatalf("the first meeting queued %d zombies, want %d", q.Len(), zombies)
	}
	// A worker takes each: one token a second removes one, and the others
	// wait for theirs (the controller would add them back after the wait).
	waiting := 0
	for q.Len() > 0 {
		req, _ := q.Get()
		res, err := r.reconcileZombie(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter > 0 {
			waiting++
		}
		q.Forget(req)
		q.Done(req)
	}
	if waiting != zombies-1 {
		t.Fatalf("%d zombies wait for a token, want %d", waiting, zombies-1)
	}

	clock.Step(100 * time.Millisecond)
	r.enqueueMet(t.Context(), meetingOf("a", "hot"), q)
	if q.Len() != 0 {
		t.Errorf("meeting the target again queued %d zombies that already wait for their token, want none", q.Len())
	}
	var left arbiterv1alpha1.ConflictResolutionOperationList
	if err := c.List(t.Context(), &left); err != nil {
		t.Fatal(err)
	}
	var remet []string
	for i := range left.Items {
		if at, ok := r.metAt(&left.Items[i]); !ok || !at.Equal(firstMet) {
			remet = append(remet, left.Items[i].Name)
		}
	}
	if len(remet) > 0 {
		t.Errorf("%d of %d waiting zombies lost the record of their first meeting, e.g. %s", len(remet), len(left.Items), remet[0])
	}
}

// A met zombie that its policy, edited meanwhile, no longer removes loses
// its record when a worker finds so: met again once the policy takes it
// back, it is queued again, not passed by as already met.
func TestAMetZombieItsPolicyLetGoIsQueuedWhenMetAgain(t *testing.T) {
	policy, z := lazyPolicy("v", 200), zombieOn("v", "ledger-zombie", "ledger")
	r, c := fakeCleaner(t, policy, z)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	setPhases := func(phases ...arbiterv1alpha1.ZombiePhase) {
		t.Helper()
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(policy), policy); err != nil {
			t.Fatal(err)
		}
		policy.Spec.Phases = phases
		if err := c.Update(t.Context(), policy); err != nil {
			t.Fatal(err)
		}
		r.governorCache.policiesChanged("v") // as the policy watch does
	}
	work := func() {
		t.Helper()
		for q.Len() > 0 {
			req, _ := q.Get()
			if _, err := r.reconcileZombie(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			q.Done(req)
		}
	}

	r.enqueueMet(t.Context(), meetingOf("v", "ledger"), q)
	setPhases("Failed") // Rejected zombies are no longer this policy's
	work()
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(z), z); err != nil {
		t.Fatalf("a zombie its policy no longer governs was removed: %v", err)
	}
	setPhases("Rejected", "Failed")
	r.enqueueMet(t.Context(), meetingOf("v", "ledger"), q)
	if q.Len() != 1 {
		t.Fatalf("met again under a policy that removes it, the zombie was queued %d times, want once", q.Len())
	}
	work()
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(z), z); !apierrors.IsNotFound(err) {
		t.Errorf("the zombie met again survived (get: %v)", err)
	}
}

// The met records are shared between namespaces: when the book is full, a
// namespace at its share is refused a record, and one under its share takes
// the newest record of the namespace holding the most.
func TestMetRecordsAreSharedBetweenNamespaces(t *testing.T) {
	b := newMetBook(4)
	at := time.Now()
	key := func(ns string, i int) types.NamespacedName {
		return types.NamespacedName{Namespace: ns, Name: fmt.Sprint(i)}
	}
	for i := range 5 {
		if added := b.Add(key("a", i), "uid", at); added != (i < 4) {
			t.Fatalf("a's record %d added %v into a book of 4", i, added)
		}
	}
	if b.Add(key("a", 0), "uid", at) {
		t.Error("a zombie met twice was given to a worker twice")
	}
	if !b.Add(key("a", 3), "uid-of-another", at) {
		t.Error("an operation created again under a met zombie's name was not given to a worker")
	}
	if !b.Add(key("b", 0), "uid", at) || !b.Add(key("b", 1), "uid", at) {
		t.Fatal("namespace b, under its share of a full book, was refused")
	}
	if b.Add(key("b", 2), "uid", at) {
		t.Error("namespace b was given a record past its share (2 of 4)")
	}
	for _, k := range []types.NamespacedName{key("a", 0), key("a", 1), key("b", 0), key("b", 1)} {
		if _, ok := b.At(k, "uid"); !ok {
			t.Errorf("%s lost its record; a's newest should have made room", k)
		}
	}
	if n := b.Len(); n != 4 {
		t.Errorf("%d records in a book of 4", n)
	}
	b.Remove(key("b", 0))
	b.Remove(key("b", 1))
	if !b.Add(key("a", 2), "uid", at) {
		t.Error("a record freed was not given to the next zombie met")
	}
}

// A dryRun policy sends at most wouldCleanEventsPerReport WouldClean
// events between two reports, and its report's one event counts them all:
// a restarted manager reports every dry-run zombie again, and one event
// each would cost a failover as many writes.
func TestWouldCleanEventsAreBoundedPerReport(t *testing.T) {
	p := testPolicy("a", "audit", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.DryRun = true })
	r, _ := fakeCleaner(t, p)
	rec := clientevents.NewFakeRecorder(100)
	r.Recorder = rec
	report := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := r.remove(t.Context(), p, rejected("a", fmt.Sprintf("z-%d-%d", n, i)), "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	events := func() (perZombie int, onPolicy []string) {
		for {
			select {
			case e := <-rec.Events:
				switch {
				case strings.Contains(e, "Would have removed"):
					onPolicy = append(onPolicy, e)
				case strings.Contains(e, "WouldClean"):
					perZombie++
				}
			default:
				return perZombie, onPolicy
			}
		}
	}
	report(25)
	if n, _ := events(); n != wouldCleanEventsPerReport {
		t.Fatalf("%d WouldClean events for 25 zombies, want %d", n, wouldCleanEventsPerReport)
	}
	orig := p.DeepCopy()
	tr, f := r.figures(p, time.Now())
	if err := r.writeReport(t.Context(), p, orig, tr, f); err != nil {
		t.Fatal(err)
	}
	if _, onPolicy := events(); len(onPolicy) != 1 || !strings.Contains(onPolicy[0], "Would have removed 25 zombie(s)") {
		t.Fatalf("the report's events %q, want one counting 25", onPolicy)
	}
	report(3)
	if n, _ := events(); n != 3 {
		t.Fatalf("%d WouldClean events after the report, want 3", n)
	}
}
