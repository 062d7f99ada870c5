package controllers

import (
	"context"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// Lazy cleanup: zombies are removed when arbiter meets their target, never
// on a timer.

// MeetTargets tells lazy cleanup that arbiter is working on an operation's
// targets; their zombies old enough under a Lazy policy are removed. It
// never blocks the caller. A target already waiting for its meeting to be
// handled is not sent again.
func (r *CleanupReconciler) MeetTargets(op *arbiterv1alpha1.ConflictResolutionOperation) {
	// A copy of what lazy cleanup reads: the caller goes on with op.
	met := &arbiterv1alpha1.ConflictResolutionOperation{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: op.Name, UID: op.UID}}
	r.meetingsMu.Lock()
	if r.pendingMeetings == nil {
		r.pendingMeetings = map[string]bool{}
	}
	for _, t := range op.Spec.Targets {
		if k := registry.KeyOf(op.Namespace, t); !r.pendingMeetings[k] {
			r.pendingMeetings[k] = true
			met.Spec.Targets = append(met.Spec.Targets, arbiterv1alpha1.Target{APIVersion: t.APIVersion, Kind: t.Kind, Name: t.Name})
		}
	}
	r.meetingsMu.Unlock()
	if len(met.Spec.Targets) == 0 {
		return
	}
	select {
	case r.meetings <- event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]{Object: met}:
	default: // Lazy cleanup is best effort: the target will be met again.
		r.meetingHandled(met)
	}
}

// meetingHandled lets met's targets be met again: called as its meeting is
// taken from the channel, so that zombies that finish during the walk are
// found by the next one.
func (r *CleanupReconciler) meetingHandled(met *arbiterv1alpha1.ConflictResolutionOperation) {
	r.meetingsMu.Lock()
	defer r.meetingsMu.Unlock()
	for _, t := range met.Spec.Targets {
		delete(r.pendingMeetings, registry.KeyOf(met.Namespace, t))
	}
}

// enqueueMet hands the zombies of a met operation's targets that a Lazy
// policy lets go to the zombie controller, with a record that they were
// met: their removal then waits for its deletion token on a timer, never in
// this one goroutine that serves every namespace.
func (r *CleanupReconciler) enqueueMet(ctx context.Context, e event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation],
	q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	op := e.Object
	r.meetingHandled(op)
	cands, err := r.governors(ctx, op.Namespace)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Lazy cleanup skipped a meeting", "operation", client.ObjectKeyFromObject(op))
		return
	}
	// Most namespaces have no Lazy policy: then a target's operations need
	// not be read at all.
	if r.DefaultStrategy != string(arbiterv1alpha1.CleanupLazy) && !slices.ContainsFunc(cands.Policies(), func(p *arbiterv1alpha1.CleanupPolicy) bool {
		return p.Spec.Strategy == arbiterv1alpha1.CleanupLazy
	}) {
		return
	}
	now := r.now()
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
			// Met already: a worker will reach it (queued, or waiting for
			// its deletion token). Looked up before judging, so that a
			// target met over and over costs a lookup per zombie.
			key := client.ObjectKeyFromObject(z)
			if _, met := r.met.At(key, z.UID); met {
				continue
			}
			gov := r.governing(z, cands)
			if gov == nil || gov.Spec.Strategy != arbiterv1alpha1.CleanupLazy || !cleanup.Judge(gov, z).Due(now) {
				continue
			}
			if r.met.Add(key, z.UID, now) {
				q.Add(reconcile.Request{NamespacedName: key})
			}
		}
	}
}

// metAt returns when lazy cleanup met op due, if a worker has yet to act
// on that meeting.
func (r *CleanupReconciler) metAt(op *arbiterv1alpha1.ConflictResolutionOperation) (time.Time, bool) {
	return r.met.At(client.ObjectKeyFromObject(op), op.UID)
}
