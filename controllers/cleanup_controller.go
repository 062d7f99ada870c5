package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/metrics"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// healthRefresh is how often a policy's health report is refreshed even when
// nothing it governs changed.
const healthRefresh = 30 * time.Second

// DefaultStrategyNone keeps operations that no CleanupPolicy selects.
const DefaultStrategyNone = "None"

// CleanupReconciler removes zombie operations as the CleanupPolicy that
// governs each says, and keeps every policy's health report.
//
// Zombies are reconciled one by one: Immediate removes them at once,
// Deferred when their retention expires (RequeueAfter, a timer per object),
// Lazy never on a timer but when the operation controller meets their target
// (MeetTargets). Policies are reconciled for their status.
type CleanupReconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	Workers  int
	// DefaultStrategy governs operations no policy selects (None keeps them).
	DefaultStrategy string

	mu       sync.Mutex
	trackers map[types.NamespacedName]*policyTracker
	// tickets are the deletion tokens reserved for zombies that wait for
	// their policy's rate limit, by zombie.
	tickets map[types.NamespacedName]ticket
	// met records, by zombie, when lazy cleanup met it due; bounded: a
	// record lost is a zombie removed at its next meeting instead.
	met *lru.Cache
	// reported remembers the zombies a dryRun policy reported, so that each
	// is counted once; bounded, and forgotten as they go.
	reported *lru.Cache
	// meetings carries the operations arbiter meets, to the zombie
	// controller's queue.
	meetings chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]
	// reportsDue carries policies whose report a failed or dry-run removal
	// changed: no operation event follows those to refresh it.
	reportsDue chan event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy]
}

// policyTracker is what a policy's report needs that the cluster does not
// store: its deletion budget, recent outcomes and latencies, and counts not
// yet written to status.
type policyTracker struct {
	limiter   *rate.Limiter
	outcomes  cleanup.Outcomes
	latencies cleanup.Latencies
	cleaned   int64
	failed    int64
	// reportCost is how long the last report took to read and judge the
	// namespace's finished operations; it spaces the next refresh.
	reportCost time.Duration
}

// NewCleanupReconciler wires the cleanup controller to a manager.
func NewCleanupReconciler(mgr ctrl.Manager, workers int, defaultStrategy string) *CleanupReconciler {
	return newCleanupReconciler(mgr.GetClient(), mgr.GetEventRecorder("arbiter-cleanup"), workers, defaultStrategy)
}

func newCleanupReconciler(c client.Client, rec recorder.EventRecorder, workers int, defaultStrategy string) *CleanupReconciler {
	return &CleanupReconciler{
		Client:          c,
		Recorder:        rec,
		Workers:         workers,
		DefaultStrategy: defaultStrategy,
		trackers:        map[types.NamespacedName]*policyTracker{},
		tickets:         map[types.NamespacedName]ticket{},
		met:             lru.New(metRecords),
		reported:        lru.New(reportedRecords),
		meetings:        make(chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation], 4096),
		reportsDue:      make(chan event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy], 1024),
	}
}

// metRecords and reportedRecords bound what the cleanup controller
// remembers per zombie; about 100 bytes each.
const (
	metRecords      = 16384
	reportedRecords = 65536
)

// SetupWithManager registers the zombie and policy controllers and the
// tracker sweep.
func (r *CleanupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(manager.RunnableFunc(r.sweepTrackers)); err != nil {
		return err
	}
	// Every change of a finished operation passes, its annotations included:
	// arbiter.dev/keep removed or arbiter.dev/acknowledged added releases it.
	terminal := predicate.NewPredicateFuncs(func(o client.Object) bool {
		op, ok := o.(*arbiterv1alpha1.ConflictResolutionOperation)
		return ok && op.Status.Phase.IsTerminal()
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("cleanup").
		For(&arbiterv1alpha1.ConflictResolutionOperation{}, builder.WithPredicates(terminal)).
		// A policy's spec, not its status reports, changes which zombies it removes.
		Watches(&arbiterv1alpha1.CleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policyToZombies),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(r.meetings, handler.TypedFuncs[*arbiterv1alpha1.ConflictResolutionOperation, reconcile.Request]{
			GenericFunc: r.enqueueMet,
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(reconcile.Func(r.reconcileZombie))
	if err != nil {
		return err
	}
	// A report is refreshed when its policy or a sibling is created, edited or
	// deleted (overlaps change), when an operation finishes or goes, and on a
	// timer; never by its own status write, which would loop.
	specChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("cleanuppolicy").
		For(&arbiterv1alpha1.CleanupPolicy{}, specChanged).
		Watches(&arbiterv1alpha1.CleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policiesOfNamespace), specChanged).
		Watches(&arbiterv1alpha1.ConflictResolutionOperation{}, r.coalescedPolicyRefresh(), builder.WithPredicates(terminal)).
		WatchesRawSource(source.Channel(r.reportsDue, handler.TypedFuncs[*arbiterv1alpha1.CleanupPolicy, reconcile.Request]{
			GenericFunc: func(_ context.Context, e event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				key := client.ObjectKeyFromObject(e.Object)
				q.AddAfter(reconcile.Request{NamespacedName: key}, r.refreshDelay(key))
			},
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(reconcile.Func(r.reconcilePolicy))
}

// policyToZombies re-judges a namespace's finished operations when a policy
// changes: a new or edited policy applies to zombies already there.
func (r *CleanupReconciler) policyToZombies(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, p := range []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
		arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded} {
		ops, err := registry.InPhases(ctx, r.Client, o.GetNamespace(), p)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing operations for a changed policy", "policy", client.ObjectKeyFromObject(o))
			return nil
		}
		for _, op := range ops {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return reqs
}

// policyRefreshDelay gathers the operations that finish or go in a burst
// into one refresh of their policies' reports: a report reads every finished
// operation of the namespace, so one per event would cost a storm dearly.
const policyRefreshDelay = time.Second

// reportSpacing keeps the reports' share of the manager's time small in a
// namespace with many zombies: refreshes that events bring come at least
// reportSpacing times the last report's cost apart, and never later than the
// timer. With 50k zombies a report takes half a second.
const reportSpacing = 20

// refreshDelay is how long an event waits before it refreshes policy's report.
func (r *CleanupReconciler) refreshDelay(policy types.NamespacedName) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.trackers[policy]; ok {
		return min(max(policyRefreshDelay, reportSpacing*t.reportCost), healthRefresh)
	}
	return policyRefreshDelay
}

// coalescedPolicyRefresh refreshes the reports of a namespace's policies
// when one of its operations finishes or goes, at most once per
// refreshDelay.
func (r *CleanupReconciler) coalescedPolicyRefresh() handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range r.policiesOfNamespace(ctx, o) {
			q.AddAfter(req, r.refreshDelay(req.NamespacedName))
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
}

// policiesOfNamespace lists the policies of o's namespace.
func (r *CleanupReconciler) policiesOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return reqs
}

// policies lists the cleanup policies of a namespace.
func (r *CleanupReconciler) policies(ctx context.Context, namespace string) ([]arbiterv1alpha1.CleanupPolicy, error) {
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("listing cleanup policies of %s: %w", namespace, err)
	}
	return list.Items, nil
}

// governing returns the policy that governs op among its namespace's
// policies: the oldest selecting policy, else the operator-wide default,
// else nil.
func (r *CleanupReconciler) governing(op *arbiterv1alpha1.ConflictResolutionOperation, policies []arbiterv1alpha1.CleanupPolicy) *arbiterv1alpha1.CleanupPolicy {
	if p := cleanup.Governing(op, policies); p != nil {
		return p
	}
	if r.DefaultStrategy == "" || r.DefaultStrategy == DefaultStrategyNone {
		return nil
	}
	return &arbiterv1alpha1.CleanupPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: defaultPolicyName},
		Spec: arbiterv1alpha1.CleanupPolicySpec{
			Strategy:              arbiterv1alpha1.CleanupStrategy(r.DefaultStrategy),
			Phases:                []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"},
			MaxDeletionsPerSecond: 200,
		},
	}
}

// reconcileZombie removes one finished operation when the policy that
// governs it says so. It never waits: a zombie that must wait for its
// retention or its policy's rate limit is requeued for then.
func (r *CleanupReconciler) reconcileZombie(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !op.Status.Phase.IsTerminal() || !op.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	policies, err := r.policies(ctx, op.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	gov := r.governing(op, policies)
	if gov == nil {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	v := cleanup.Judge(gov, op)
	// A zombie over history on this target may have to wait for a deletion
	// token: then this one comes back for it.
	var history time.Duration
	if v.Zombie && gov.Spec.HistoryLimit != nil {
		if history, err = r.enforceHistory(ctx, gov, policies, op); err != nil {
			return ctrl.Result{}, err
		}
	}
	later := func(d time.Duration) ctrl.Result {
		if history > 0 && (d == 0 || history < d) {
			d = history
		}
		return ctrl.Result{RequeueAfter: d}
	}
	now := time.Now()
	why := v.Why
	switch {
	case v.Held != "":
		ctrl.LoggerFrom(ctx).V(1).Info("Held from cleanup", "why", v.Held)
		r.forget(req.NamespacedName)
		return later(0), nil
	case !v.Removable:
		return later(0), nil
	case v.OnlyWhenMet:
		at, met := r.metAt(op)
		if !met || !v.Due(at) {
			r.met.Remove(req.NamespacedName)
			return later(0), nil
		}
		why += ", met on its target"
	case !v.Due(now):
		return later(v.At.Sub(now)), nil
	}
	wait, err := r.remove(ctx, gov, op, why)
	if err != nil {
		return ctrl.Result{}, err
	}
	if wait > 0 {
		return later(wait), nil
	}
	r.met.Remove(req.NamespacedName)
	if !v.OnlyWhenMet { // a lazy removal meets a target already met
		r.MeetTargets(op)
	}
	return later(0), nil
}

// enforceHistory removes the oldest zombies of op's targets beyond the
// policy's historyLimit, among those the policy governs. It returns how long
// to wait for the next deletion token, when one is missing.
func (r *CleanupReconciler) enforceHistory(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, policies []arbiterv1alpha1.CleanupPolicy,
	op *arbiterv1alpha1.ConflictResolutionOperation) (time.Duration, error) {
	for _, t := range op.Spec.Targets {
		ops, err := registry.OnTarget(ctx, r.Client, registry.KeyOf(op.Namespace, t))
		if err != nil {
			return 0, err
		}
		for _, z := range cleanup.OverHistory(gov, policies, ops) {
			wait, err := r.remove(ctx, gov, z, fmt.Sprintf("historyLimit %d on %s", *gov.Spec.HistoryLimit, t.Name))
			if err != nil || wait > 0 {
				return wait, err
			}
		}
	}
	return 0, nil
}

// MeetTargets tells lazy cleanup that arbiter is working on an operation's
// targets; their zombies old enough under a Lazy policy are removed. It
// never blocks the caller.
func (r *CleanupReconciler) MeetTargets(op *arbiterv1alpha1.ConflictResolutionOperation) {
	// A copy of what lazy cleanup reads: the caller goes on with op.
	met := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: op.Name, UID: op.UID}}
	for _, t := range op.Spec.Targets {
		met.Spec.Targets = append(met.Spec.Targets, arbiterv1alpha1.Target{APIVersion: t.APIVersion, Kind: t.Kind, Name: t.Name})
	}
	select {
	case r.meetings <- event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]{Object: met}:
	default: // Lazy cleanup is best effort: the target will be met again.
	}
}

// enqueueMet hands the zombies of a met operation's targets that a Lazy
// policy lets go to the zombie controller, with a record that they were
// met: their removal then waits for its deletion token on a timer, never in
// this one goroutine that serves every namespace.
func (r *CleanupReconciler) enqueueMet(ctx context.Context, e event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation],
	q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	op := e.Object
	policies, err := r.policies(ctx, op.Namespace)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Lazy cleanup skipped a meeting", "operation", client.ObjectKeyFromObject(op))
		return
	}
	// Most namespaces have no Lazy policy: then a target's operations need
	// not be read at all.
	if r.DefaultStrategy != string(arbiterv1alpha1.CleanupLazy) && !slices.ContainsFunc(policies, func(p arbiterv1alpha1.CleanupPolicy) bool {
		return p.Spec.Strategy == arbiterv1alpha1.CleanupLazy
	}) {
		return
	}
	now := time.Now()
	for _, t := range op.Spec.Targets {
		ops, err := registry.OnTarget(ctx, r.Client, registry.KeyOf(op.Namespace, t))
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Lazy cleanup skipped a target", "operation", client.ObjectKeyFromObject(op), "target", t.Name)
			continue
		}
		for i := range ops {
			z := &ops[i]
			if !z.Status.Phase.IsTerminal() || !z.DeletionTimestamp.IsZero() {
				continue
			}
			gov := r.governing(z, policies)
			if gov == nil || gov.Spec.Strategy != arbiterv1alpha1.CleanupLazy || !cleanup.Judge(gov, z).Due(now) {
				continue
			}
			key := client.ObjectKeyFromObject(z)
			r.met.Add(key, metRecord{uid: z.UID, at: now})
			q.Add(reconcile.Request{NamespacedName: key})
		}
	}
}

// metRecord says when lazy cleanup met a zombie.
type metRecord struct {
	uid types.UID
	at  time.Time
}

// metAt returns when op was last met by lazy cleanup, if it is recorded.
func (r *CleanupReconciler) metAt(op *arbiterv1alpha1.ConflictResolutionOperation) (time.Time, bool) {
	v, ok := r.met.Get(client.ObjectKeyFromObject(op))
	if !ok || v.(metRecord).uid != op.UID {
		return time.Time{}, false
	}
	return v.(metRecord).at, true
}

// ticket is a deletion token reserved for one zombie from its policy's
// limiter, due at the reservation's time.
type ticket struct {
	uid     types.UID
	tracker *policyTracker
	limit   rate.Limit
	res     *rate.Reservation
}

// admit takes a deletion token of t for op, or says how long op must wait
// for the one reserved for it. Holding the reservation, rather than
// cancelling it and trying again, keeps a policy's waiting zombies in line:
// each comes back once, when its token is due, instead of all of them
// retrying at every token.
func (r *CleanupReconciler) admit(t *policyTracker, op *arbiterv1alpha1.ConflictResolutionOperation) time.Duration {
	key := client.ObjectKeyFromObject(op)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if tk, ok := r.tickets[key]; ok {
		delete(r.tickets, key)
		if tk.uid == op.UID && tk.tracker == t && tk.limit == t.limiter.Limit() {
			if d := tk.res.DelayFrom(now); d > 0 {
				r.tickets[key] = tk
				return d
			}
			return 0
		}
		// Another operation of that name, a policy deleted or its rate edited.
		tk.res.CancelAt(now)
	}
	res := t.limiter.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		r.tickets[key] = ticket{uid: op.UID, tracker: t, limit: t.limiter.Limit(), res: res}
		return d
	}
	return 0
}

// forget drops what is remembered of an operation that went, or that no
// longer waits for cleanup; an unused deletion token goes back to its policy.
func (r *CleanupReconciler) forget(key types.NamespacedName) {
	r.met.Remove(key)
	r.reported.Remove(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if tk, ok := r.tickets[key]; ok {
		tk.res.Cancel()
		delete(r.tickets, key)
	}
}

func (r *CleanupReconciler) tracker(p *arbiterv1alpha1.CleanupPolicy) *policyTracker {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := client.ObjectKeyFromObject(p)
	t, ok := r.trackers[k]
	perSecond := max(p.Spec.MaxDeletionsPerSecond, 1)
	if !ok {
		t = &policyTracker{limiter: rate.NewLimiter(rate.Limit(perSecond), int(perSecond))}
		r.trackers[k] = t
	} else if t.limiter.Limit() != rate.Limit(perSecond) {
		t.limiter.SetLimit(rate.Limit(perSecond))
		t.limiter.SetBurst(int(perSecond))
	}
	return t
}

// reportedAs is what reported remembers of a zombie a dryRun policy
// counted.
type reportedAs struct {
	uid    types.UID
	policy types.UID
}

// remove deletes one operation as judged, or under dryRun reports that it
// would. The delete carries preconditions on the UID and resourceVersion it
// was judged at, which the API server checks in the same transaction: one
// that changed since (or a stale cached copy) is left for the next
// judgement, which its update brings. When the policy's rate limit allows
// no deletion yet, it deletes nothing and returns how long to wait.
func (r *CleanupReconciler) remove(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, judged *arbiterv1alpha1.ConflictResolutionOperation, why string) (time.Duration, error) {
	t := r.tracker(gov)
	strategy := string(gov.Spec.Strategy)
	if gov.Spec.DryRun {
		key, as := client.ObjectKeyFromObject(judged), reportedAs{uid: judged.UID, policy: gov.UID}
		r.mu.Lock()
		seen, _ := r.reported.Get(key)
		first := seen != as
		if first {
			r.reported.Add(key, as)
			t.cleaned++
		}
		r.mu.Unlock()
		if first {
			metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "dryrun").Inc()
			r.Recorder.Eventf(judged, gov, corev1.EventTypeNormal, "WouldClean", "Cleanup",
				"Would be removed (%s) by CleanupPolicy %s, which is in dryRun", why, gov.Name)
			r.reportDue(gov)
		}
		return 0, nil
	}

	if wait := r.admit(t, judged); wait > 0 {
		return wait, nil
	}
	uid, rv := judged.UID, judged.ResourceVersion
	err := r.Client.Delete(ctx, judged, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return 0, nil
	case err != nil:
		r.mu.Lock()
		t.outcomes.Add(time.Now(), true)
		t.failed++
		r.mu.Unlock()
		metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "failure").Inc()
		r.Recorder.Eventf(judged, gov, corev1.EventTypeWarning, "CleanupFailed", "Cleanup", "Could not remove it (%s): %v", why, err)
		r.reportDue(gov)
		return 0, fmt.Errorf("removing %s: %w", client.ObjectKeyFromObject(judged), err)
	}
	latency := time.Since(cleanup.CompletedAt(judged))
	r.mu.Lock()
	t.outcomes.Add(time.Now(), false)
	t.latencies.Add(latency)
	t.cleaned++
	r.mu.Unlock()
	metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "success").Inc()
	metrics.CleanupLatency.WithLabelValues(strategy).Observe(latency.Seconds())
	r.Recorder.Eventf(judged, gov, corev1.EventTypeNormal, "Cleaned", "Cleanup", "Removed %s after it ended (%s)", latency.Round(time.Millisecond), why)
	return 0, nil
}

// defaultPolicyName names the operator-wide default policy in logs and
// events; no CleanupPolicy can have it.
const defaultPolicyName = "--default-cleanup-strategy"

// sweepTrackers drops, every healthRefresh, the trackers no policy needs.
func (r *CleanupReconciler) sweepTrackers(ctx context.Context) error {
	tick := time.NewTicker(healthRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := r.sweep(ctx); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Sweeping cleanup trackers failed")
			}
		}
	}
}

// sweep drops the trackers of policies that are gone (a removal racing a
// policy's deletion can re-create one after reconcilePolicy dropped it), and
// the operator-wide default's of a namespace once its bucket is full again:
// a new one would be the same, and namespaces come and go.
func (r *CleanupReconciler) sweep(ctx context.Context) error {
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list); err != nil {
		return fmt.Errorf("listing cleanup policies: %w", err)
	}
	live := make(map[types.NamespacedName]bool, len(list.Items))
	for i := range list.Items {
		live[client.ObjectKeyFromObject(&list.Items[i])] = true
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.trackers {
		idle := t.limiter.TokensAt(now) >= float64(t.limiter.Burst())
		if !live[k] && (k.Name != defaultPolicyName || idle) {
			delete(r.trackers, k)
		}
	}
	return nil
}

// reportDue asks for a refresh of gov's report, unless gov is the
// operator-wide default, which has none.
func (r *CleanupReconciler) reportDue(gov *arbiterv1alpha1.CleanupPolicy) {
	if gov.UID == "" {
		return
	}
	select {
	case r.reportsDue <- event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy]{Object: gov}:
	default: // the timer refreshes it
	}
}

// reconcilePolicy refreshes a policy's health report.
func (r *CleanupReconciler) reconcilePolicy(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &arbiterv1alpha1.CleanupPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.trackers, req.NamespacedName)
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	started := time.Now()
	var policies arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &policies, client.InNamespace(p.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	// Policies govern finished operations only.
	finished, err := registry.InPhases(ctx, r.Client, p.Namespace, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
		arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded)
	if err != nil {
		return ctrl.Result{}, err
	}

	now := time.Now()
	var obs cleanup.Observation
	zombiesByPhase := map[arbiterv1alpha1.OperationPhase]int{}
	var nsOldest time.Duration
	overlappedBy := ""
	for i := range finished {
		op := &finished[i]
		gov := cleanup.Governing(op, policies.Items)
		if gov == nil {
			continue
		}
		if cleanup.IsZombie(gov, op) {
			age := now.Sub(cleanup.CompletedAt(op))
			zombiesByPhase[op.Status.Phase]++
			nsOldest = max(nsOldest, age)
			if gov.UID == p.UID {
				obs.Zombies++
				obs.OldestZombieAge = max(obs.OldestZombieAge, age)
			}
		}
		if gov.UID != p.UID && cleanup.Selects(p, op) && overlappedBy == "" {
			overlappedBy = gov.Name
		}
	}
	for _, phase := range []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.PhaseCancelled} {
		metrics.Zombies.WithLabelValues(p.Namespace, string(phase)).Set(float64(zombiesByPhase[phase]))
	}
	metrics.ZombieOldestAge.WithLabelValues(p.Namespace).Set(nsOldest.Seconds())

	t := r.tracker(p)
	r.mu.Lock()
	t.reportCost = time.Since(started)
	obs.FailureRatePercent, _ = t.outcomes.FailureRatePercent(now)
	p50, have := t.latencies.Percentile(50)
	p99, _ := t.latencies.Percentile(99)
	cleaned, failed := t.cleaned, t.failed
	r.mu.Unlock()

	orig := p.DeepCopy()
	s := &p.Status
	state, issues, reason := cleanup.Health(p.Spec.Health, obs)
	s.Health, s.Issues = state, issues
	s.Zombies = int32(obs.Zombies)
	s.OldestZombieAgeSeconds = int64(obs.OldestZombieAge.Seconds())
	s.CleanedTotal += cleaned
	s.CleanupFailuresTotal += failed
	s.CleanupFailureRatePercent = obs.FailureRatePercent
	if have {
		s.CleanupLatency = &arbiterv1alpha1.CleanupLatency{P50: &metav1.Duration{Duration: p50.Round(time.Millisecond)}, P99: &metav1.Duration{Duration: p99.Round(time.Millisecond)}}
	}
	s.ObservedGeneration = p.Generation
	setCondition(p, arbiterv1alpha1.PolicyReady, true, arbiterv1alpha1.ReasonEvaluated,
		fmt.Sprintf("Governs %d zombie(s) with the %s strategy", obs.Zombies, p.Spec.Strategy))
	healthMsg := "Every health threshold is met"
	if len(s.Issues) > 0 {
		healthMsg = fmt.Sprint(s.Issues)
	}
	setCondition(p, arbiterv1alpha1.PolicyHealthy, state == arbiterv1alpha1.HealthHealthy, reason, healthMsg)
	if overlappedBy != "" {
		setCondition(p, arbiterv1alpha1.PolicyOverlapping, true, arbiterv1alpha1.ReasonOverlapsOlderPolicy,
			fmt.Sprintf("CleanupPolicy %s is older and governs some operations this policy selects", overlappedBy))
	} else {
		setCondition(p, arbiterv1alpha1.PolicyOverlapping, false, arbiterv1alpha1.ReasonNoOverlap, "No older policy selects the same operations")
	}

	// Written only when something but the sweep time changed.
	last := orig.Status.LastSweepTime
	s.LastSweepTime = last
	if !equality.Semantic.DeepEqual(orig.Status, p.Status) {
		sweep := metav1.NewTime(now)
		s.LastSweepTime = &sweep
		if err := r.Client.Status().Patch(ctx, p, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording policy status: %w", err)
		}
		r.mu.Lock()
		t.cleaned -= cleaned
		t.failed -= failed
		r.mu.Unlock()
	}
	// Sooner than the timer when the oldest zombie is about to pass
	// maxZombieAge, so that Degraded is reported when it does.
	next := healthRefresh
	if untilTooOld := cleanup.MaxZombieAge(p.Spec.Health) - obs.OldestZombieAge; obs.Zombies > 0 && untilTooOld > 0 {
		next = min(next, untilTooOld+time.Second)
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

func setCondition(p *arbiterv1alpha1.CleanupPolicy, condType string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: condType, Status: s, Reason: reason,
		Message: message, ObservedGeneration: p.Generation})
}
