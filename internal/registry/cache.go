package registry

import (
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// lastApplied is the annotation `kubectl apply` keeps: a second copy of the
// whole manifest.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// arbiterAnnotations is the prefix of the annotations arbiter reads.
const arbiterAnnotations = "arbiter.dev/"

// CacheOptions is how the manager caches objects. Every object loses its
// managedFields, and a finished operation keeps only what cleanup and
// staging read: its identity, labels, arbiter's annotations, priority,
// parent, targets' names, requester's username, and its phase and times.
// Zombies can number tens of thousands, and arbiter never applies a
// finished operation again; clients still read the whole object from the
// API server.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&arbiterv1alpha1.ConflictResolutionOperation{}: {Transform: TrimFinished},
		},
	}
}

// TrimFinished strips an object's managedFields and, from a finished
// operation, what only executing it needs.
func TrimFinished(obj any) (any, error) {
	obj, err := cache.TransformStripManagedFields()(obj)
	op, ok := obj.(*arbiterv1alpha1.ConflictResolutionOperation)
	if err != nil || !ok || !op.Status.Phase.IsTerminal() {
		return obj, err
	}
	// The object is fresh from the watch and not shared yet: trimmed in place.
	// Annotations take up to 256 KiB an operation, which anyone who may
	// create one can fill: a zombie keeps arbiter's alone (the last-applied
	// copy of the manifest goes with the rest).
	for k := range op.Annotations {
		if !strings.HasPrefix(k, arbiterAnnotations) {
			delete(op.Annotations, k)
		}
	}
	op.Spec.Params = nil
	// The username alone is kept, for cleanup's audit record of its removal.
	if op.Spec.RequestedBy != nil {
		op.Spec.RequestedBy = &arbiterv1alpha1.RequesterInfo{Username: op.Spec.RequestedBy.Username}
	}
	for i := range op.Spec.Targets {
		t := &op.Spec.Targets[i]
		t.JSONPatch, t.MergePatch, t.Expression = nil, nil, ""
	}
	op.Status.Message = ""
	op.Status.Conditions = nil
	op.Status.Targets = nil
	return op, nil
}
