// Package registry indexes ConflictResolutionOperations in the manager's
// cache by target and by phase, and answers the typed queries that staging,
// lazy cleanup and health reports ask. Every field index is registered here,
// in Setup, under an exported key.
package registry

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

const (
	// TargetKey indexes operations by each of their targets (see KeyOf).
	TargetKey = "arbiter.dev/target"
	// PhaseKey indexes operations by status.phase ("Pending" when unset).
	PhaseKey = "status.phase"
)

// KeyOf is the index value of one target of an operation in namespace:
// group/kind/namespace/name, the key staging groups operations by.
func KeyOf(namespace string, t arbiterv1alpha1.Target) string {
	gv, _ := schema.ParseGroupVersion(t.APIVersion)
	return fmt.Sprintf("%s/%s/%s/%s", gv.Group, t.Kind, namespace, t.Name)
}

func indexTargets(obj client.Object) []string {
	op, ok := obj.(*arbiterv1alpha1.ConflictResolutionOperation)
	if !ok {
		return nil
	}
	keys := make([]string, 0, len(op.Spec.Targets))
	for _, t := range op.Spec.Targets {
		keys = append(keys, KeyOf(op.Namespace, t))
	}
	return keys
}

func indexPhase(obj client.Object) []string {
	op, ok := obj.(*arbiterv1alpha1.ConflictResolutionOperation)
	if !ok {
		return nil
	}
	return []string{string(PhaseOf(op))}
}

// PhaseOf is the operation's phase, Pending until arbiter first writes one.
func PhaseOf(op *arbiterv1alpha1.ConflictResolutionOperation) arbiterv1alpha1.OperationPhase {
	if op.Status.Phase == "" {
		return arbiterv1alpha1.PhasePending
	}
	return op.Status.Phase
}

// Setup registers every index with the manager's cache.
func Setup(ctx context.Context, indexer client.FieldIndexer) error {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := indexer.IndexField(ctx, op, TargetKey, indexTargets); err != nil {
		return fmt.Errorf("indexing operations by target: %w", err)
	}
	if err := indexer.IndexField(ctx, op, PhaseKey, indexPhase); err != nil {
		return fmt.Errorf("indexing operations by phase: %w", err)
	}
	return nil
}

// OnTarget lists the operations that name a target, whatever their phase.
// From a cache, they share its maps and slices (no deep copy: a namespace
// can hold tens of thousands of finished operations): read them, never
// change them.
func OnTarget(ctx context.Context, c client.Reader, key string) ([]arbiterv1alpha1.ConflictResolutionOperation, error) {
	var list arbiterv1alpha1.ConflictResolutionOperationList
	if err := c.List(ctx, &list, client.MatchingFields{TargetKey: key}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing operations on %s: %w", key, err)
	}
	return list.Items, nil
}

// InPhases lists a namespace's operations in any of the phases. As with
// OnTarget, read them, never change them.
func InPhases(ctx context.Context, c client.Reader, namespace string, phases ...arbiterv1alpha1.OperationPhase) ([]arbiterv1alpha1.ConflictResolutionOperation, error) {
	var out []arbiterv1alpha1.ConflictResolutionOperation
	for _, p := range phases {
		var list arbiterv1alpha1.ConflictResolutionOperationList
		if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{PhaseKey: string(p)}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing %s operations in %s: %w", p, namespace, err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}
