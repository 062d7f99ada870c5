package controllers

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// maxParentDepth bounds the parentRef chain read for an operation's
// effective priority. Anyone who may create operations can build a chain
// one operation at a time, each naming the last; without a bound, every
// staging of an operation naming its head would read the whole chain on the
// workers every namespace shares.
const maxParentDepth = 32

// invalidParentError is a parentRef chain that leads back to itself or is
// longer than maxParentDepth: the operation fails InvalidParent.
type invalidParentError struct{ message string }

func (e *invalidParentError) Error() string { return e.message }

// effectivePriority is the maximum of the operation's priority and its
// parents' along the parentRef chain, as far as each parent may lend it:
// only a parent of the same requester that has not finished does. Anyone
// may name any operation of the namespace as parent, so without that rule
// a user could borrow another user's priority, or an old high-priority
// operation's, past an admission policy that reserves high priorities. The
// note says why the chain stopped early, for the Staged condition.
func (r *OperationReconciler) effectivePriority(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) (priority int32, note string, err error) {
	priority = op.Spec.Priority
	chain := []string{op.Name}
	seen := map[string]bool{op.Name: true}
	// The whole chain is read, past a parent that lends nothing, so that a
	// cycle fails every operation in it whatever state the others are in.
	lending := true
	for cur := op; cur.Spec.ParentRef != nil; {
		name := cur.Spec.ParentRef.Name
		chain = append(chain, name)
		if seen[name] {
			return 0, "", &invalidParentError{fmt.Sprintf("spec.parentRef forms a cycle: %v", chain)}
		}
		seen[name] = true
		parent := &arbiterv1alpha1.ConflictResolutionOperation{}
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: op.Namespace, Name: name}, parent); err != nil {
			if apierrors.IsNotFound(err) {
				if lending {
					note = fmt.Sprintf("parentRef %s not found, so it lends no priority", name)
				}
				return priority, note, nil
			}
			return 0, "", fmt.Errorf("reading parent %s: %w", name, err)
		}
		// A parent past the bound that does not exist lends nothing, as
		// above; one that does makes the chain too long.
		if len(chain) > maxParentDepth+1 {
			return 0, "", &invalidParentError{fmt.Sprintf("spec.parentRef: the chain of parents (%s, %s, ... %s) is longer than %d",
				chain[1], chain[2], name, maxParentDepth)}
		}
		if why := whyNotLending(op, parent); lending && why != "" {
			lending, note = false, fmt.Sprintf("parentRef %s lends no priority: %s", name, why)
		}
		if lending {
			priority = max(priority, parent.Spec.Priority)
		}
		cur = parent
	}
	return priority, note, nil
}

// whyNotLending says why parent may not lend its priority to op, or "".
// The requester must be the same with the same groups: an admission policy
// may reserve high priorities to a group, and a parent created while its
// requester was in it must not lend that priority once they are not.
func whyNotLending(op, parent *arbiterv1alpha1.ConflictResolutionOperation) string {
	mine, theirs := op.Spec.RequestedBy, parent.Spec.RequestedBy
	switch {
	case mine == nil || theirs == nil || mine.Username != theirs.Username || mine.UID != theirs.UID:
		return "it was requested by someone else"
	case !sameGroups(mine.Groups, theirs.Groups):
		return "its requester was in other groups then"
	case parent.Status.Phase.IsTerminal():
		return fmt.Sprintf("it has finished (%s)", parent.Status.Phase)
	}
	return ""
}

// sameGroups says whether two lists name the same groups, in any order.
func sameGroups(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
