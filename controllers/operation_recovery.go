package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/pager"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/execute"
)

// Start recovers what a previous manager left in flight (executing operations
// first, then queued ones), then runs the arbiter loop until ctx ends: it
// decides batches as their windows close and wakes the operations whose
// verdict changed.
func (r *OperationReconciler) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("arbiter")
	if err := r.recover(ctx); err != nil {
		return fmt.Errorf("recovering operations: %w", err)
	}
	r.ready.Store(true)
	log.Info("Arbiter ready")

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed, next := r.Arbiter.Tick(r.now())
		for _, id := range changed {
			op := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: id.Namespace, Name: id.Name}}
			select {
			case r.verdicts <- event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]{Object: op}:
			case <-ctx.Done():
				return nil
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(r.now()), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-r.Arbiter.Changed():
		case <-timer.C:
		}
	}
}

// recover registers executing operations as holders of their targets and
// queued ones in their queues, before any new operation is staged, so that
// nothing is applied twice or overtaken after a restart.
func (r *OperationReconciler) recover(ctx context.Context) error {
	// Only these two phases matter, and the API server selects them
	// (status.phase is a selectable field): tens of thousands of zombies
	// cost recovery nothing. Only the leader writes phases, so none moves
	// between the two reads.
	for _, phase := range []arbiterv1alpha1.OperationPhase{arbiterv1alpha1.PhaseExecuting, arbiterv1alpha1.PhaseQueued} {
		if err := r.recoverPhase(ctx, phase); err != nil {
			return err
		}
	}
	return nil
}

// recoverPhase registers the operations in one phase, read in pages.
func (r *OperationReconciler) recoverPhase(ctx context.Context, phase arbiterv1alpha1.OperationPhase) error {
	p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		list := &arbiterv1alpha1.ConflictResolutionOperationList{}
		return list, r.APIReader.List(ctx, list, &client.ListOptions{Raw: &opts})
	})
	p.PageSize = recoverPageSize
	// Never one full list: when the snapshot is compacted away mid-read,
	// read again from the start; holding and requeueing again is harmless.
	p.FullListIfExpired = false
	selector := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("status.phase", string(phase)).String()}
	for {
		err := p.EachListItem(ctx, selector, func(obj runtime.Object) error {
			r.register(obj.(*arbiterv1alpha1.ConflictResolutionOperation))
			return nil
		})
		if !apierrors.IsResourceExpired(err) {
			return err
		}
	}
}

// register holds an executing operation's targets, or queues a queued one.
func (r *OperationReconciler) register(op *arbiterv1alpha1.ConflictResolutionOperation) {
	c := contender(op, op.Status.EffectivePriority, r.stagedAt(op))
	switch op.Status.Phase {
	case arbiterv1alpha1.PhaseExecuting:
		// Its grace period starts anew: a recovered execution resumes now,
		// and must not be preempted at once for the time the manager was down.
		r.Arbiter.Hold(c, r.now(), op.Spec.GracePeriodOrDefault())
	case arbiterv1alpha1.PhaseQueued:
		r.Arbiter.Requeue(c)
	}
}

// recoverPageSize is how many operations recovery reads per request.
const recoverPageSize = 500

// finishedSet remembers operations this manager just finished, so that a
// reconcile of a cached copy older than the terminal status write does not
// stage or execute them again. Entries expire after finishedMemory, by which
// time the cache has long caught up.
type finishedSet struct {
	mu  sync.Mutex
	at  map[types.UID]time.Time
	gen int
}

const finishedMemory = 2 * time.Minute

func (f *finishedSet) add(uid types.UID, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at == nil {
		f.at = map[types.UID]time.Time{}
	}
	f.at[uid] = now
	if f.gen++; f.gen%1024 == 0 {
		for u, t := range f.at {
			if now.Sub(t) > finishedMemory {
				delete(f.at, u)
			}
		}
	}
}

func (f *finishedSet) has(uid types.UID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.at[uid]
	return ok
}

// executions keeps each executing operation's progress between reconciles:
// a backoff, a transient error or a failed status write goes on where it
// stopped, and knows what to roll back. It holds only operations that
// execute, each holding its targets, so it is bounded by the targets in
// flight.
type executions struct {
	mu sync.Mutex
	by map[types.NamespacedName]*execution
}

type execution struct {
	uid      types.UID
	progress execute.Progress
}

// of returns op's progress, new when op has none or a predecessor under the
// same name had one.
func (e *executions) of(op *arbiterv1alpha1.ConflictResolutionOperation) *execute.Progress {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.by == nil {
		e.by = map[types.NamespacedName]*execution{}
	}
	key := client.ObjectKeyFromObject(op)
	x, ok := e.by[key]
	if !ok || x.uid != op.UID {
		x = &execution{uid: op.UID}
		e.by[key] = x
	}
	return &x.progress
}

// drop forgets the progress of the operation named key, if it is uid's
// (any uid when empty).
func (e *executions) drop(key types.NamespacedName, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.by[key]; ok && (uid == "" || x.uid == uid) {
		delete(e.by, key)
	}
}
