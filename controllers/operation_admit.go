package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/authz"
	"github.com/arbiter-dev/arbiter/internal/execute"
)

// admit decides whether an operation may be arbitrated at all: not
// cancelled, not timed out, a parentRef chain without a cycle, targets of
// its own namespace, and a requester who may carry it out. It finishes the
// operation (refused) when not.
func (r *OperationReconciler) admit(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (st staged, refused bool, err error) {
	refuse := func(phase arbiterv1alpha1.OperationPhase, reason, message string) (staged, bool, error) {
		// Released only once the outcome is written: a write on a stale
		// copy (of an operation that is in fact executing) meets a 409,
		// and its targets stay held.
		if err := r.finish(ctx, op, phase, reason, message, nil); err != nil {
			return staged{}, true, err
		}
		r.Arbiter.Forget(key(op))
		return staged{}, true, nil
	}
	switch {
	case op.Annotations[arbiterv1alpha1.CancelAnnotation] == "true":
		return refuse(arbiterv1alpha1.PhaseCancelled, arbiterv1alpha1.ReasonCancelled,
			"Cancelled with the "+arbiterv1alpha1.CancelAnnotation+" annotation before it executed")
	case !r.now().Before(op.Deadline()):
		return refuse(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonTimeout,
			fmt.Sprintf("Not applied within its timeout of %s", op.Spec.TimeoutOrDefault()))
	}
	st.priority, st.note, err = r.effectivePriority(ctx, op)
	if invalid := (*invalidParentError)(nil); errors.As(err, &invalid) {
		return refuse(arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonInvalidParent, invalid.Error())
	} else if err != nil {
		return st, false, err
	}
	// Only an operation its requester may carry out enters a batch: a
	// forbidden one must never win, nor make anyone else lose. A queued one
	// was checked before it entered; it is checked again when it wins.
	if op.Status.Phase != arbiterv1alpha1.PhaseQueued {
		if f, err := r.checkTargets(ctx, op); err != nil || f != nil {
			if f != nil {
				return refuse(arbiterv1alpha1.PhaseFailed, f.Reason, f.Message)
			}
			return st, false, err
		}
	}
	return st, false, nil
}

// checkTargets returns a Failure when a target is cluster-scoped or the
// requester may not get and update it, an error when that could not be
// found out.
func (r *OperationReconciler) checkTargets(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (*execute.Failure, error) {
	// Served, as discovery tells after the operation's creation: its
	// timestamp is whole seconds, so a second later.
	created := op.CreationTimestamp.Add(time.Second)
	// The API refuses a target named twice with the same apiVersion; two
	// versions of one group name the same object, which would be written
	// twice and found applied by its own record.
	type object struct {
		gr   schema.GroupResource
		name string
	}
	seen := map[object]int{}
	for i, t := range op.Spec.Targets {
		gv, err := schema.ParseGroupVersion(t.APIVersion)
		if err != nil {
			return &execute.Failure{Reason: arbiterv1alpha1.ReasonInvalidMutation, Message: fmt.Sprintf("Target apiVersion %q: %v", t.APIVersion, err)}, nil
		}
		mapping, err := r.Kinds.RESTMappingSince(created, gv.WithKind(t.Kind).GroupKind(), gv.Version)
		switch {
		case meta.IsNoMatchError(err):
			return &execute.Failure{Reason: arbiterv1alpha1.ReasonTargetNotFound,
				Message: fmt.Sprintf("%s %s: the kind is not served by the API server", t.APIVersion, t.Kind)}, nil
		case err != nil:
			return nil, fmt.Errorf("mapping %s %s: %w", t.APIVersion, t.Kind, err)
		case mapping.Scope.Name() != meta.RESTScopeNameNamespace:
			// The request would name no namespace: a cluster-scoped object
			// is no one namespace's to change, whatever RBAC a namespace grants.
			return &execute.Failure{Reason: arbiterv1alpha1.ReasonClusterScopedTarget,
				Message: fmt.Sprintf("%s %s is cluster-scoped; an operation may change objects of its own namespace only", t.Kind, t.Name)}, nil
		}
		o := object{mapping.Resource.GroupResource(), t.Name}
		if j, ok := seen[o]; ok {
			return &execute.Failure{Reason: arbiterv1alpha1.ReasonInvalidMutation,
				Message: fmt.Sprintf("spec.targets[%d] names the same object as spec.targets[%d] (%s %s, in another version): each object may be a target once", i, j, t.Kind, t.Name)}, nil
		}
		seen[o] = i
	}
	return r.checkAccess(ctx, op)
}

// checkAccess asks whether op's requester may get and update its targets:
// a Failure (Forbidden) when not.
func (r *OperationReconciler) checkAccess(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (*execute.Failure, error) {
	err := r.Authz.Check(ctx, op)
	if denied := (*authz.Denied)(nil); errors.As(err, &denied) {
		return &execute.Failure{Reason: arbiterv1alpha1.ReasonForbidden, Message: denied.Message}, nil
	}
	return nil, err
}
