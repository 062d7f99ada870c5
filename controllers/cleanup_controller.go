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
	met      chan metTargets
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
	reported  map[types.UID]bool
	// reportCost is how long the last report took to read and judge the
	// namespace's finished operations; it spaces the next refresh.
	reportCost time.Duration
}

// NewCleanupReconciler wires the cleanup controller to a manager.
func NewCleanupReconciler(mgr ctrl.Manager, workers int, defaultStrategy string) *CleanupReconciler {
	return &CleanupReconciler{
		Client:          mgr.GetClient(),
		Recorder:        mgr.GetEventRecorder("arbiter-cleanup"),
		Workers:         workers,
		DefaultStrategy: defaultStrategy,
		trackers:        map[types.NamespacedName]*policyTracker{},
		met:             make(chan metTargets, 4096),
		reportsDue:      make(chan event.TypedGenericEvent[*arbiterv1alpha1.CleanupPolicy], 1024),
	}
}

// SetupWithManager registers the zombie and policy controllers and the lazy
// cleanup loop.
func (r *CleanupReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(manager.RunnableFunc(r.runLazy)); err != nil {
		return err
	}
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

// governing returns the policy that governs op: the oldest selecting policy,
// else the operator-wide default, else nil.
func (r *CleanupReconciler) governing(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (*arbiterv1alpha1.CleanupPolicy, error) {
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(op.Namespace)); err != nil {
		return nil, fmt.Errorf("listing cleanup policies: %w", err)
	}
	if p := cleanup.Governing(op, list.Items); p != nil {
		return p, nil
	}
	if r.DefaultStrategy == "" || r.DefaultStrategy == DefaultStrategyNone {
		return nil, nil
	}
	return &arbiterv1alpha1.CleanupPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: "--default-cleanup-strategy"},
		Spec: arbiterv1alpha1.CleanupPolicySpec{
			Strategy:              arbiterv1alpha1.CleanupStrategy(r.DefaultStrategy),
			Phases:                []arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"},
			MaxDeletionsPerSecond: 200,
		},
	}, nil
}

func (r *CleanupReconciler) reconcileZombie(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !op.Status.Phase.IsTerminal() || !op.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	gov, err := r.governing(ctx, op)
	if err != nil || gov == nil {
		return ctrl.Result{}, err
	}
	v := cleanup.Judge(gov, op)
	if v.Zombie && gov.Spec.HistoryLimit != nil {
		if err := r.enforceHistory(ctx, gov, op); err != nil {
			return ctrl.Result{}, err
		}
	}
	now := time.Now()
	switch {
	case !v.Removable, v.OnlyWhenMet:
		return ctrl.Result{}, nil
	case !v.Due(now):
		return ctrl.Result{RequeueAfter: v.At.Sub(now)}, nil
	}
	if err := r.remove(ctx, gov, op, v.Why); err != nil {
		return ctrl.Result{}, err
	}
	r.MeetTargets(op)
	return ctrl.Result{}, nil
}

// enforceHistory removes the oldest zombies of op's targets beyond the
// policy's historyLimit.
func (r *CleanupReconciler) enforceHistory(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation) error {
	for _, t := range op.Spec.Targets {
		ops, err := registry.OnTarget(ctx, r.Client, registry.KeyOf(op.Namespace, t))
		if err != nil {
			return err
		}
		var zombies []*arbiterv1alpha1.ConflictResolutionOperation
		for i := range ops {
			z := &ops[i]
			if z.DeletionTimestamp.IsZero() && cleanup.IsZombie(gov, z) && cleanup.Selects(gov, z) {
				zombies = append(zombies, z)
			}
		}
		for _, z := range cleanup.OverHistory(gov, zombies) {
			if err := r.remove(ctx, gov, z, fmt.Sprintf("historyLimit %d on %s", *gov.Spec.HistoryLimit, t.Name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// metTargets are the targets of one operation arbiter is working on.
type metTargets struct {
	namespace string
	keys      []string
}

// MeetTargets tells lazy cleanup that arbiter is working on an operation's
// targets; their zombies old enough under a Lazy policy are removed. It
// never blocks the caller.
func (r *CleanupReconciler) MeetTargets(op *arbiterv1alpha1.ConflictResolutionOperation) {
	met := metTargets{namespace: op.Namespace, keys: make([]string, 0, len(op.Spec.Targets))}
	for _, t := range op.Spec.Targets {
		met.keys = append(met.keys, registry.KeyOf(op.Namespace, t))
	}
	select {
	case r.met <- met:
	default: // Lazy cleanup is best effort: the target will be met again.
	}
}

// runLazy removes the zombies of met targets that their Lazy policy allows.
func (r *CleanupReconciler) runLazy(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case met := <-r.met:
			// Most namespaces have no Lazy policy: then a target's
			// operations need not be read at all.
			if lazy, err := r.lazyIn(ctx, met.namespace); err != nil || !lazy {
				continue
			}
			for _, k := range met.keys {
				if err := r.cleanTarget(ctx, k); err != nil {
					ctrl.LoggerFrom(ctx).Error(err, "Lazy cleanup failed", "target", k)
				}
			}
		}
	}
}

// lazyIn reports whether a Lazy strategy can govern operations of namespace.
func (r *CleanupReconciler) lazyIn(ctx context.Context, namespace string) (bool, error) {
	if r.DefaultStrategy == string(arbiterv1alpha1.CleanupLazy) {
		return true, nil
	}
	var list arbiterv1alpha1.CleanupPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return false, err
	}
	return slices.ContainsFunc(list.Items, func(p arbiterv1alpha1.CleanupPolicy) bool {
		return p.Spec.Strategy == arbiterv1alpha1.CleanupLazy
	}), nil
}

// cleanTarget removes the due zombies on target key that a Lazy policy
// governs. Each is judged under the policies as they are when its turn comes:
// deletions wait on the policy's rate limit, and a policy edited meanwhile
// (dryRun, retention, strategy) must take effect at once.
func (r *CleanupReconciler) cleanTarget(ctx context.Context, key string) error {
	ops, err := registry.OnTarget(ctx, r.Client, key)
	if err != nil {
		return err
	}
	now := time.Now()
	for i := range ops {
		z := &ops[i]
		if !z.Status.Phase.IsTerminal() || !z.DeletionTimestamp.IsZero() {
			continue
		}
		gov, err := r.governing(ctx, z)
		if err != nil {
			return err
		}
		if gov == nil || gov.Spec.Strategy != arbiterv1alpha1.CleanupLazy {
			continue
		}
		if v := cleanup.Judge(gov, z); v.Due(now) {
			if err := r.remove(ctx, gov, z, v.Why+", met on its target"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *CleanupReconciler) tracker(p *arbiterv1alpha1.CleanupPolicy) *policyTracker {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := client.ObjectKeyFromObject(p)
	t, ok := r.trackers[k]
	perSecond := max(p.Spec.MaxDeletionsPerSecond, 1)
	if !ok {
		t = &policyTracker{limiter: rate.NewLimiter(rate.Limit(perSecond), int(perSecond)), reported: map[types.UID]bool{}}
		r.trackers[k] = t
	} else if t.limiter.Limit() != rate.Limit(perSecond) {
		t.limiter.SetLimit(rate.Limit(perSecond))
		t.limiter.SetBurst(int(perSecond))
	}
	return t
}

// remove deletes one operation as judged, or under dryRun reports that it
// would. The delete carries preconditions on the UID and resourceVersion it
// was judged at, which the API server checks in the same transaction: one
// that changed since (or a stale cached copy) is left for the next
// judgement, which its update brings.
func (r *CleanupReconciler) remove(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, judged *arbiterv1alpha1.ConflictResolutionOperation, why string) error {
	t := r.tracker(gov)
	strategy := string(gov.Spec.Strategy)
	if gov.Spec.DryRun {
		r.mu.Lock()
		first := !t.reported[judged.UID]
		if first {
			t.reported[judged.UID] = true
			t.cleaned++
		}
		r.mu.Unlock()
		if first {
			metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "dryrun").Inc()
			r.Recorder.Eventf(judged, gov, corev1.EventTypeNormal, "WouldClean", "Cleanup",
				"Would be removed (%s) by CleanupPolicy %s, which is in dryRun", why, gov.Name)
			r.reportDue(gov)
		}
		return nil
	}

	if err := t.limiter.Wait(ctx); err != nil {
		return err
	}
	uid, rv := judged.UID, judged.ResourceVersion
	err := r.Client.Delete(ctx, judged, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil
	case err != nil:
		r.mu.Lock()
		t.outcomes.Add(time.Now(), true)
		t.failed++
		r.mu.Unlock()
		metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "failure").Inc()
		r.Recorder.Eventf(judged, gov, corev1.EventTypeWarning, "CleanupFailed", "Cleanup", "Could not remove it (%s): %v", why, err)
		r.reportDue(gov)
		return fmt.Errorf("removing %s: %w", client.ObjectKeyFromObject(judged), err)
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
