package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/authz"
	"github.com/arbiter-dev/arbiter/internal/execute"
	"github.com/arbiter-dev/arbiter/internal/kinds"
	"github.com/arbiter-dev/arbiter/internal/metrics"
	"github.com/arbiter-dev/arbiter/internal/staging"
)

// notReadyRetry is how soon an operation seen before recovery finished, or
// waiting for a target another execution still holds, is looked at again.
const notReadyRetry = 100 * time.Millisecond

// OperationReconciler arbitrates and applies ConflictResolutionOperations.
//
// Reconcile moves one operation through its states (see state); the arbiter
// loop (Start) decides batches as their windows close and wakes the
// operations whose verdict changed. No reconcile ever sleeps: a backoff is
// a RequeueAfter.
type OperationReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Arbiter   *staging.Arbiter
	Executor  *execute.Executor
	// Authz reviews each operation's requester before it may be staged,
	// and again before a queued one executes.
	Authz *authz.Checker
	// Kinds maps target kinds; a kind the API server does not serve costs
	// no discovery of its own (Authz maps with it too).
	Kinds   *kinds.Mapper
	Workers int
	// Clock tells time to every decision; the real clock when nil.
	Clock clock.Clock
	// Meet, when set, is told of every operation staged, so that lazy
	// cleanup can remove old zombies of the same targets.
	Meet func(*arbiterv1alpha1.ConflictResolutionOperation)

	verdicts   chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]
	ready      atomic.Bool
	finished   finishedSet
	executions executions
	events     eventBudget
}

// NewOperationReconciler wires the operation controller to a manager.
func NewOperationReconciler(mgr ctrl.Manager, workers int) (*OperationReconciler, error) {
	clk := clock.RealClock{} // one clock for every decision, backoff and review
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("building the discovery client: %w", err)
	}
	targetKinds := kinds.NewMapper(dc)
	return &OperationReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("arbiter"),
		Arbiter:   staging.NewArbiter(),
		// Targets are read from the API server, never the cache: a decision
		// on a stale read would only meet a 409.
		Executor: &execute.Executor{Reader: mgr.GetAPIReader(), Writer: client.WithFieldOwner(mgr.GetClient(), "arbiter"), Clock: clk},
		Authz:    &authz.Checker{Client: mgr.GetClient(), Mapper: targetKinds, Clock: clk},
		Kinds:    targetKinds,
		Workers:  workers,
		Clock:    clk,
	}, nil
}

// SetupWithManager registers the controller and the arbiter loop.
func (r *OperationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.verdicts = make(chan event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation], 1024)
	if err := mgr.Add(r); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&arbiterv1alpha1.ConflictResolutionOperation{}).
		WatchesRawSource(source.Channel(r.verdicts, &handler.TypedEnqueueRequestForObject[*arbiterv1alpha1.ConflictResolutionOperation]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, RateLimiter: retryLimiter()}).
		Complete(r)
}

// NeedLeaderElection reports true: only the leader arbitrates.
func (r *OperationReconciler) NeedLeaderElection() bool { return true }

func (r *OperationReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// operationState is where an operation stands, as Reconcile dispatches on it.
type operationState int

const (
	// stateStale: a cached copy older than the outcome this manager wrote.
	stateStale operationState = iota
	// stateFinished: terminal; only the finalizer may be left to release.
	stateFinished
	// stateNotReady: recovery has not registered what was in flight yet.
	stateNotReady
	// stateExecuting: won, applying (or rolling back if deleted meanwhile).
	stateExecuting
	// stateDeleted: deleted before it executed.
	stateDeleted
	// stateStaging: pending or queued, to be arbitrated.
	stateStaging
)

func (r *OperationReconciler) state(op *arbiterv1alpha1.ConflictResolutionOperation) operationState {
	switch {
	case op.Status.Phase.IsTerminal():
		// A finished operation needs nothing from recovery, which registers
		// only executing and queued ones: after a restart among thousands of
		// zombies, they must not spin on notReadyRetry until it is done.
		return stateFinished
	case r.finished.has(op.UID):
		return stateStale
	case !r.ready.Load():
		return stateNotReady
	case op.Status.Phase == arbiterv1alpha1.PhaseExecuting:
		return stateExecuting
	case !op.DeletionTimestamp.IsZero():
		return stateDeleted
	}
	return stateStaging
}

// Reconcile moves one operation along from the state it is in.
func (r *OperationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		if apierrors.IsNotFound(err) {
			r.Arbiter.Forget(req.NamespacedName)
			r.executions.drop(req.NamespacedName, "")
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	switch r.state(op) {
	case stateStale:
		return ctrl.Result{}, nil
	case stateFinished, stateDeleted:
		r.Arbiter.ForgetUID(key(op), string(op.UID))
		r.executions.drop(req.NamespacedName, op.UID)
		return ctrl.Result{}, r.releaseFinalizer(ctx, op)
	case stateNotReady:
		return ctrl.Result{RequeueAfter: notReadyRetry}, nil
	case stateExecuting:
		return r.execute(ctx, op)
	}
	return r.stage(ctx, op)
}

// stage offers a pending or queued operation to the arbiter and acts on the verdict.
func (r *OperationReconciler) stage(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (ctrl.Result, error) {
	st, refused, err := r.admit(ctx, op)
	if unknown := (*kinds.NotYetKnownError)(nil); errors.As(err, &unknown) {
		// Asked again once discovery may run: no error, no backoff.
		return ctrl.Result{RequeueAfter: max(unknown.RetryAfter, notReadyRetry)}, nil
	}
	if err != nil || refused {
		return ctrl.Result{}, err
	}
	now := r.now()
	c := contender(op, st.priority, r.stagedAt(op))
	v := r.Arbiter.Offer(c, op.Spec.Staging.WindowOrDefault(), now)
	if r.Meet != nil && v.Kind == staging.Wait && v.StagedAt.Equal(c.StagedAt) {
		r.Meet(op) // first staged now: arbiter meets its targets
	}
	// What the decision was made on is what status records.
	st.at, st.priority = v.StagedAt, v.Priority
	switch v.Kind {
	case staging.Wait:
		return ctrl.Result{RequeueAfter: untilDeadline(op, r.now())}, nil
	case staging.Reject:
		return ctrl.Result{}, r.onLost(ctx, op, st, v)
	case staging.Queue:
		return r.onQueued(ctx, op, st, v)
	}
	return r.onWon(ctx, op, st, v)
}

// onLost ends an operation that lost its batch.
func (r *OperationReconciler) onLost(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation, st staged, v staging.Verdict) error {
	metrics.StagingBatchSize.Observe(float64(v.BatchSize))
	winner := v.Winner.Name
	err := r.finish(withBatch(ctx, v), op, arbiterv1alpha1.PhaseRejected, arbiterv1alpha1.ReasonLostStaging,
		fmt.Sprintf("Lost staging to %s among %d operations on the same target", winner, v.BatchSize),
		func(op *arbiterv1alpha1.ConflictResolutionOperation) { markRejected(op, st, winner) })
	if err == nil {
		r.Arbiter.Settle(key(op))
	}
	return err
}

// onQueued records an operation that lost a Queue batch; it waits its turn.
func (r *OperationReconciler) onQueued(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation, st staged, v staging.Verdict) (ctrl.Result, error) {
	winner := v.Winner.Name
	if err := r.patchStatus(ctx, op, func(op *arbiterv1alpha1.ConflictResolutionOperation) { markQueued(op, st, winner) }); err != nil {
		return ctrl.Result{}, fmt.Errorf("recording queued status: %w", err)
	}
	logDecision(ctx, op, v)
	r.Arbiter.Settle(key(op))
	return ctrl.Result{RequeueAfter: untilDeadline(op, r.now())}, nil
}

// onWon records the win (so that a restarted manager recovers it first),
// then executes.
func (r *OperationReconciler) onWon(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation, st staged, v staging.Verdict) (ctrl.Result, error) {
	wasQueued := op.Status.Phase == arbiterv1alpha1.PhaseQueued
	if wasQueued {
		// Its requester may have lost the right while it waited.
		f, err := r.checkTargets(ctx, op)
		if err != nil {
			return ctrl.Result{}, err
		}
		if f != nil {
			// Released only once the outcome is written, as in admit.
			if err := r.finish(ctx, op, arbiterv1alpha1.PhaseFailed, f.Reason, f.Message, nil); err != nil {
				return ctrl.Result{}, err
			}
			r.Arbiter.Forget(key(op))
			return ctrl.Result{}, nil
		}
	}
	// A multi-target operation can leave partial work: hold it with the
	// finalizer, so that deleting it rolls the work back first.
	if len(op.Spec.Targets) > 1 && controllerutil.AddFinalizer(op, arbiterv1alpha1.CleanupFinalizer) {
		if err := r.Client.Update(ctx, op); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the cleanup finalizer: %w", err)
		}
	}
	// This manager begins the execution, before any write: a target's
	// record of it that this execution did not write is not to be trusted.
	// Set before the Executing write is sent, so that a write whose answer
	// is lost, but which landed, still leaves the execution this manager's.
	r.executions.of(op).StartedHere = true
	now := r.now()
	if err := r.patchStatus(ctx, op, func(op *arbiterv1alpha1.ConflictResolutionOperation) { markExecuting(op, st, v.BatchSize, now) }); err != nil {
		// The win stands (the verdict is kept until settled): the next
		// reconcile, on a fresher copy, records it. A write the API server
		// refused did not land: whoever records Executing next may not be
		// this manager, and must not find the execution taken as its own.
		if !writeMayHaveLanded(err) {
			r.executions.of(op).StartedHere = false
		}
		return ctrl.Result{}, fmt.Errorf("recording executing status: %w", err)
	}
	logDecision(ctx, op, v)
	if v.BatchSize > 0 {
		metrics.StagingBatchSize.Observe(float64(v.BatchSize))
	}
	id := key(op)
	r.Arbiter.Settle(id)
	r.Arbiter.Started(id, now, op.Spec.GracePeriodOrDefault())
	if v.BatchSize > 1 && !wasQueued {
		// The batch's one event: its losers' status names this winner. A
		// queued operation's turn is no new contest: the queue had its event.
		r.Recorder.Eventf(op, nil, corev1.EventTypeNormal, "Won", "Stage",
			"Won staging among %d operations on its targets; the others are Rejected or Queued behind it", v.BatchSize)
	}
	return r.execute(ctx, op)
}

// contender is the operation as the arbiter sees it.
func contender(op *arbiterv1alpha1.ConflictResolutionOperation, priority int32, staged time.Time) staging.Contender {
	c := staging.Contender{
		ID:       key(op),
		UID:      string(op.UID),
		Priority: priority,
		StagedAt: staged,
		Queue:    op.Spec.Staging.OnConflict == arbiterv1alpha1.ConflictPolicyQueue,
	}
	for _, t := range op.Spec.Targets {
		gv, _ := schema.ParseGroupVersion(t.APIVersion)
		c.Targets = append(c.Targets, staging.Key{Group: gv.Group, Kind: t.Kind, Namespace: op.Namespace, Name: t.Name})
	}
	return c
}

// stagedAt is when the operation was first staged: recorded in status once
// it lost or won, else now.
func (r *OperationReconciler) stagedAt(op *arbiterv1alpha1.ConflictResolutionOperation) time.Time {
	if op.Status.StagedAt != nil {
		return op.Status.StagedAt.Time
	}
	return r.now()
}

// untilDeadline is how soon a waiting operation must be looked at again to
// time out: never zero, which would mean never.
func untilDeadline(op *arbiterv1alpha1.ConflictResolutionOperation, now time.Time) time.Duration {
	return max(op.Deadline().Sub(now), time.Millisecond)
}

// key is how the arbiter knows an operation.
func key(op *arbiterv1alpha1.ConflictResolutionOperation) staging.ID {
	return client.ObjectKeyFromObject(op)
}
