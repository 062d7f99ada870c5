package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/metrics"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// wouldCleanEventsPerReport bounds the WouldClean events a dryRun policy
// sends between two reports: the report's own event counts them all, and
// the audit log names each. A restarted manager reports every dry-run
// zombie again; one event each would cost a failover tens of thousands of
// writes.
const wouldCleanEventsPerReport = 10

// metRecords and reportedRecords bound what the cleanup controller
// remembers per zombie, some 200 bytes a record: at most 3 and 13 MiB, a
// fraction of what the cache holds for as many zombies. Tickets need no
// bound of their own: one per zombie waiting for a token, dropped as it goes.
const (
	metRecords      = 16384
	reportedRecords = 65536
	// unansweredRecords bounds the deletes awaiting confirmation: only a
	// connection lost or an API server timing out makes one, not a tenant.
	unansweredRecords = 4096
)

// setupZombies registers the zombie controller: every finished operation is
// reconciled, when it changes, when a policy that may govern it changes,
// when its namespace is relabelled (which cluster policies cover it
// changes), and when lazy cleanup meets it.
func (r *CleanupReconciler) setupZombies(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("cleanup").
		For(&arbiterv1alpha1.ConflictResolutionOperation{}, builder.WithPredicates(terminal, r.historyChanges())).
		// A policy's spec, not its status reports, changes which zombies it removes.
		Watches(&arbiterv1alpha1.CleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(r.policyToZombies),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&arbiterv1alpha1.ClusterCleanupPolicy{}, handler.EnqueueRequestsFromMapFunc(r.clusterPolicyToZombies),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Namespace{}, r.namespaceEvents(), builder.OnlyMetadata).
		WatchesRawSource(source.Channel(r.meetings, handler.TypedFuncs[*arbiterv1alpha1.ConflictResolutionOperation, reconcile.Request]{
			GenericFunc: r.enqueueMet,
		})).
		WatchesRawSource(source.Channel(r.historyTurns, &handler.TypedEnqueueRequestForObject[*arbiterv1alpha1.ConflictResolutionOperation]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(reconcile.Func(r.reconcileZombie))
}

// policyToZombies re-judges a namespace's finished operations when a policy
// changes: a new or edited policy applies to zombies already there.
func (r *CleanupReconciler) policyToZombies(ctx context.Context, o client.Object) []reconcile.Request {
	r.governorCache.policiesChanged(o.GetNamespace())
	return r.finishedIn(ctx, o.GetNamespace())
}

// clusterPolicyToZombies re-judges the finished operations of the
// namespaces a changed ClusterCleanupPolicy covers, before and after the
// change (the map sees both objects of an update).
func (r *CleanupReconciler) clusterPolicyToZombies(ctx context.Context, o client.Object) []reconcile.Request {
	r.governorCache.policiesChanged("")
	_, namespaces := r.changedClusterPolicy(ctx, o)
	var reqs []reconcile.Request
	for _, ns := range namespaces {
		reqs = append(reqs, r.finishedIn(ctx, ns)...)
	}
	return reqs
}

// namespaceEvents keeps the candidates kept for judging zombies in step
// with namespaces (created, relabelled, deleted), re-judges a relabelled
// namespace's zombies (which cluster policies cover it follows its labels)
// and deletes a deleted namespace's metric series.
func (r *CleanupReconciler) namespaceEvents() handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.governorCache.policiesChanged(e.Object.GetName())
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.governorCache.namespaceGone(e.Object.GetName())
			metrics.ForgetNamespace(e.Object.GetName())
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if !(predicate.LabelChangedPredicate{}).Update(e) {
				return
			}
			r.governorCache.policiesChanged(e.ObjectNew.GetName())
			for _, req := range r.namespaceToZombies(ctx, e.ObjectNew) {
				q.Add(req)
			}
		},
	}
}

// namespaceToZombies re-judges a relabelled namespace's finished
// operations, when there is a cluster policy its labels could matter to.
func (r *CleanupReconciler) namespaceToZombies(ctx context.Context, o client.Object) []reconcile.Request {
	var clusters arbiterv1alpha1.ClusterCleanupPolicyList
	if err := r.Client.List(ctx, &clusters); err != nil || len(clusters.Items) == 0 {
		return nil
	}
	return r.finishedIn(ctx, o.GetName())
}

// finishedIn lists a namespace's finished operations as requests.
func (r *CleanupReconciler) finishedIn(ctx context.Context, namespace string) []reconcile.Request {
	ops, err := registry.InPhases(ctx, r.Client, namespace, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.PhaseFailed,
		arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.PhaseSucceeded)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing finished operations to judge again", "namespace", namespace)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(ops))
	for i := range ops {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ops[i])})
	}
	return reqs
}

// reconcileZombie removes one finished operation when the policy that
// governs it says so. It never waits: a zombie that must wait for its
// retention or its policy's rate limit is requeued for then.
func (r *CleanupReconciler) reconcileZombie(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		if apierrors.IsNotFound(err) {
			r.unansweredLanded(req.NamespacedName, "")
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.unansweredLanded(req.NamespacedName, op.UID)
	if !op.Status.Phase.IsTerminal() || !op.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	cands, err := r.governors(ctx, op.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	gov := r.governing(op, cands)
	if gov == nil {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	v := cleanup.Judge(gov, op)
	// A zombie over history on this target may have to wait for a deletion
	// token: then this one comes back for it.
	var history time.Duration
	if v.Zombie && gov.Spec.HistoryLimit != nil {
		if history, err = r.enforceHistory(ctx, gov, cands, op); err != nil {
			return ctrl.Result{}, err
		}
	}
	next, err := r.dispose(ctx, gov, op, v)
	if err != nil {
		return ctrl.Result{}, err
	}
	if history > 0 && (next == 0 || history < next) {
		next = history
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// dispose acts on a zombie's verdict: it removes the zombie when it is due,
// and returns when to look at it again (zero: only when it changes).
func (r *CleanupReconciler) dispose(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation,
	v cleanup.Verdict) (time.Duration, error) {
	key := client.ObjectKeyFromObject(op)
	now := r.now()
	why := v.Why
	switch {
	case v.Held != "":
		ctrl.LoggerFrom(ctx).V(1).Info("Held from cleanup", "why", v.Held)
		r.forget(key)
		return 0, nil
	case !v.Removable:
		// Not for this policy to remove (it changed since the meeting): a
		// record kept would make later meetings pass the zombie by.
		r.met.Remove(key)
		return 0, nil
	case v.OnlyWhenMet:
		at, met := r.metAt(op)
		if !met || !v.Due(at) {
			r.met.Remove(key)
			return 0, nil
		}
		why += ", met on its target"
	case !v.Due(now):
		// Not Lazy (any more): a meeting recorded before its policy changed
		// must neither hold a share of the met records for the retention,
		// nor count if the policy becomes Lazy again.
		r.met.Remove(key)
		return v.At.Sub(now), nil
	}
	wait, err := r.remove(ctx, gov, op, why)
	if err != nil || wait > 0 {
		return wait, err
	}
	r.met.Remove(key)
	if !v.OnlyWhenMet { // a lazy removal meets a target already met
		r.MeetTargets(op)
	}
	return 0, nil
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
	now := r.now()
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

// reportedAs is what reported remembers of a zombie a dryRun policy
// counted.
type reportedAs struct {
	uid    types.UID
	policy types.UID
}

// remove deletes one operation as judged, or under dryRun reports that it
// would; every removal and every first dry-run report writes its audit
// record here, and nowhere else. The delete carries preconditions on the
// UID and resourceVersion it was judged at, which the API server checks in
// the same transaction: one that changed since (or a stale cached copy) is
// left for the next judgement, which its update brings. When the policy's
// rate limit allows no deletion yet, it deletes nothing and returns how
// long to wait.
func (r *CleanupReconciler) remove(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, judged *arbiterv1alpha1.ConflictResolutionOperation, why string) (time.Duration, error) {
	t := r.tracker(gov)
	strategy := string(gov.Spec.Strategy)
	if gov.Spec.DryRun {
		key, as := client.ObjectKeyFromObject(judged), reportedAs{uid: judged.UID, policy: gov.UID}
		r.mu.Lock()
		seen, _ := r.reported.Get(key)
		first := seen != as
		event := first && t.wouldCleanEvents < wouldCleanEventsPerReport
		if first {
			r.reported.Add(key, as)
			t.reported++
		}
		if event {
			t.wouldCleanEvents++
		}
		r.mu.Unlock()
		if first {
			r.audit(gov, judged, why, r.now())
			metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "dryrun").Inc()
			if event {
				r.Recorder.Eventf(judged, regarding(gov), corev1.EventTypeNormal, "WouldClean", "Cleanup",
					"Would be removed (%s) by %s, which is in dryRun", why, cleanup.KindName(gov))
			}
			r.reportDue(gov)
		}
		return 0, nil
	}

	if wait := r.admit(t, judged); wait > 0 {
		return wait, nil
	}
	uid, rv := judged.UID, judged.ResourceVersion
	key := client.ObjectKeyFromObject(judged)
	err := r.Client.Delete(ctx, judged, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	switch {
	case apierrors.IsNotFound(err):
		// Gone already: by an earlier delete of ours whose answer was lost
		// (recorded now), or by someone else (nothing to audit).
		r.unansweredLanded(key, "")
		return 0, nil
	case apierrors.IsConflict(err):
		// Changed since judged: arbiter removed nothing now. An earlier
		// delete whose answer was lost is settled by the UID the cache
		// shows next: another operation under the name means it landed.
		return 0, nil
	case err != nil:
		// A failed attempt, as the API server answered it. One whose answer
		// was lost (or that the API server may finish after answering) may
		// still have landed: if the next look finds the zombie gone, it is
		// this removal's, and writes its one record then (the cache may not
		// show the removal at once, so a copy still there says nothing; the
		// delete sent again does).
		if writeMayHaveLanded(err) {
			r.unanswered.Add(key, unansweredDelete{gov: gov, judged: judged, why: why})
		} else {
			r.unanswered.Remove(key)
		}
		r.failedRemoval(gov, judged, why, err)
		return 0, fmt.Errorf("removing %s: %w", key, err)
	}
	r.unanswered.Remove(key)
	r.removed(gov, judged, why)
	return 0, nil
}

// unansweredDelete is a delete whose answer was lost, as remove sent it.
type unansweredDelete struct {
	gov    *arbiterv1alpha1.CleanupPolicy
	judged *arbiterv1alpha1.ConflictResolutionOperation
	why    string
}

// writeMayHaveLanded says whether a write's error leaves it unknown whether
// the API server carried it out: no answer at all, a timeout (the API
// server may finish the request after answering), or an internal error
// (etcd timing out after the write reached it). A 429 or 503 is answered
// before the API server acts. It asks whether the write landed at all,
// which the next look at the object settles at no cost; the executor's
// mayBeStoredLater asks whether a write may still land after its error,
// a wait that holds the operation, and so leaves the 500 a failing
// admission webhook answers out.
func writeMayHaveLanded(err error) bool {
	if status := apierrors.APIStatus(nil); !errors.As(err, &status) {
		return true
	}
	return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsInternalError(err) ||
		apierrors.IsUnexpectedServerError(err)
}

// unansweredLanded records the removal by a delete of key whose answer was
// lost, once the zombie it was sent for is seen gone (uid "": not found;
// or another operation under its name): its one audit record. A zombie
// still there under its UID says nothing yet: the cache may lag, and the
// delete sent again tells.
func (r *CleanupReconciler) unansweredLanded(key types.NamespacedName, uid types.UID) {
	// Taken under r.mu: two workers may see the zombie gone at once (its
	// own reconcile, and a sibling's historyLimit delete), and only one
	// may record the removal.
	r.mu.Lock()
	v, ok := r.unanswered.Get(key)
	landed := ok && uid != v.(unansweredDelete).judged.UID
	if landed {
		r.unanswered.Remove(key)
	}
	r.mu.Unlock()
	if landed {
		u := v.(unansweredDelete)
		r.removed(u.gov, u.judged, u.why)
	}
}

// removed records a removal the API server confirmed: its one audit record,
// its latency, and a report due.
func (r *CleanupReconciler) removed(gov *arbiterv1alpha1.CleanupPolicy, judged *arbiterv1alpha1.ConflictResolutionOperation, why string) {
	t := r.tracker(gov)
	strategy := string(gov.Spec.Strategy)
	now := r.now()
	r.audit(gov, judged, why, now)
	latency := now.Sub(cleanup.CompletedAt(judged))
	r.mu.Lock()
	t.record(judged.Namespace, now, false)
	t.latencies.Add(latency)
	t.cleaned++
	r.mu.Unlock()
	metrics.CleanupTotal.WithLabelValues(judged.Namespace, strategy, "success").Inc()
	metrics.CleanupLatency.WithLabelValues(strategy).Observe(latency.Seconds())
	// No event per zombie: it is gone, and a sweep of thousands would cost
	// as many writes. The policy's report carries one event for them all,
	// and the audit record above names it. The report is asked for here:
	// the census its delete event brings may have read the tracker before
	// this removal was counted, and a zombie removed before any census
	// counted it changes no tally. The queue merges a sweep's requests.
	r.reportDue(gov)
}

// failedRemoval records a delete that failed.
func (r *CleanupReconciler) failedRemoval(gov *arbiterv1alpha1.CleanupPolicy, judged *arbiterv1alpha1.ConflictResolutionOperation, why string, err error) {
	t := r.tracker(gov)
	r.mu.Lock()
	t.record(judged.Namespace, r.now(), true)
	t.failed++
	r.mu.Unlock()
	metrics.CleanupTotal.WithLabelValues(judged.Namespace, string(gov.Spec.Strategy), "failure").Inc()
	r.Recorder.Eventf(judged, regarding(gov), corev1.EventTypeWarning, "CleanupFailed", "Cleanup", "Could not remove it (%s): %v", why, err)
	r.reportDue(gov)
}
