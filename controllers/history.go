package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// historyTargets bounds the targets whose history is kept. A target
// forgotten is walked again at its next judgement; what one keeps is a few
// dozen bytes per zombie over its limit, against the kilobytes the cache
// holds for each.
const historyTargets = 4096

// historyCache keeps, for each target and each policy with a historyLimit
// that governs zombies there, the zombies over that limit as one walk of
// the target found them, until an operation on the target or the policy's
// candidates change. Every zombie judged enforces its policy's historyLimit
// on its targets: without it, judging a target's N zombies after a policy
// change walked the target N times, work that grew with the square of a
// target's zombies on the workers every namespace shares.
type historyCache struct {
	// targets are *targetHistory by registry key.
	targets *lru.Cache
}

func newHistoryCache() historyCache { return historyCache{targets: lru.New(historyTargets)} }

// targetHistory is what is kept of one target.
type targetHistory struct {
	// walk lets one worker at a time walk the target: the others, judging
	// zombies of the same target, wait for its finding instead of walking too.
	walk sync.Mutex

	mu sync.Mutex
	// version counts the changes seen on the target's operations; findings
	// of an older version are stale.
	version uint64
	// byPolicy are the findings by policy (cleanup.Key).
	byPolicy map[types.NamespacedName]*overHistory
}

// overHistory is one walk's finding: the zombies of a target over a
// policy's historyLimit, oldest first, as cleanup.OverHistory orders them.
type overHistory struct {
	cands   *cleanup.Candidates
	version uint64
	over    []historyEntry
	// next is the first entry not yet removed (or found gone); guarded by
	// the targetHistory's mu.
	next int
}

// historyEntry is a zombie over the limit: enough to find it in the cache
// and to check that it is still the object that was judged.
type historyEntry struct {
	completedAt     time.Time
	name            string
	uid             types.UID
	resourceVersion string
}

// compare orders entries as cleanup.OverHistory does: by completion, then
// name.
func (e historyEntry) compare(completedAt time.Time, name string) int {
	if c := e.completedAt.Compare(completedAt); c != 0 {
		return c
	}
	return strings.Compare(e.name, name)
}

// target returns the history kept of a target, made when create is set;
// nil when there is none.
func (h *historyCache) target(key string, create bool) *targetHistory {
	if v, ok := h.targets.Get(key); ok {
		return v.(*targetHistory)
	}
	if !create {
		return nil
	}
	th := &targetHistory{byPolicy: map[types.NamespacedName]*overHistory{}}
	h.targets.Add(key, th)
	return th
}

// foresees reports whether a kept, current finding lists op for removal:
// then its going changes nothing the finding depends on (the zombies over
// the limit are the same, less it). th.mu must be held.
func (th *targetHistory) foresees(op *arbiterv1alpha1.ConflictResolutionOperation) bool {
	done := cleanup.CompletedAt(op)
	for _, o := range th.byPolicy {
		if o.version != th.version {
			continue
		}
		i, found := slices.BinarySearchFunc(o.over, op, func(e historyEntry, op *arbiterv1alpha1.ConflictResolutionOperation) int {
			return e.compare(done, op.Name)
		})
		if found && o.over[i].uid == op.UID {
			return true
		}
	}
	return false
}

// changed notes a change of op, seen by the cache, on each of its targets.
// gone says that op no longer counts (deleted, or being deleted): when a
// finding foresaw that, as with every removal historyLimit makes, the
// finding stays good.
func (h *historyCache) changed(op *arbiterv1alpha1.ConflictResolutionOperation, gone bool) {
	for _, t := range op.Spec.Targets {
		// A target with nothing kept has nothing to make stale: its next
		// walk reads the cache, which shows this change already.
		th := h.target(registry.KeyOf(op.Namespace, t), false)
		if th == nil {
			continue
		}
		th.mu.Lock()
		if !gone || !th.foresees(op) {
			th.version++
		}
		th.mu.Unlock()
	}
}

// historyChanges is a predicate of the zombie controller's own watch: before
// an event of a finished operation is queued, it makes what is kept of the
// operation's targets stale. The cache holds the change before the event
// comes, so a judgement queued by it walks a target that shows it.
func (r *CleanupReconciler) historyChanges() predicate.Predicate {
	note := func(o any, gone bool) {
		if op, ok := o.(*arbiterv1alpha1.ConflictResolutionOperation); ok {
			r.history.changed(op, gone || !op.DeletionTimestamp.IsZero())
		}
	}
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { note(e.Object, false); return true },
		UpdateFunc: func(e event.UpdateEvent) bool { note(e.ObjectNew, false); return true },
		DeleteFunc: func(e event.DeleteEvent) bool { note(e.Object, true); return true },
	}
}

// overHistory returns the zombies of a target over gov's historyLimit,
// walking the target only when nothing current is kept.
func (r *CleanupReconciler) overHistory(ctx context.Context, key string, gov *arbiterv1alpha1.CleanupPolicy,
	cands *cleanup.Candidates) (*targetHistory, *overHistory, error) {
	th := r.history.target(key, true)
	pk := cleanup.Key(gov)
	kept := func() (*overHistory, uint64) {
		th.mu.Lock()
		defer th.mu.Unlock()
		if o := th.byPolicy[pk]; o != nil && o.cands == cands && o.version == th.version {
			return o, th.version
		}
		return nil, th.version
	}
	if o, _ := kept(); o != nil {
		return th, o, nil
	}
	th.walk.Lock()
	defer th.walk.Unlock()
	if r.history.target(key, false) != th {
		// Evicted while this worker waited: changes since bump a target
		// kept anew, not this one. Walk now, keep nothing.
		th = r.history.target(key, true)
	}
	o, version := kept()
	if o != nil {
		return th, o, nil
	}
	// Walked after the version was read: a change the walk misses comes
	// with a newer version, so this finding is never kept past it.
	ops, err := registry.OnTarget(ctx, r.Client, key)
	if err != nil {
		return nil, nil, err
	}
	zombies := cleanup.OverHistory(gov, cands, ops)
	o = &overHistory{cands: cands, version: version, over: make([]historyEntry, len(zombies))}
	for i, z := range zombies {
		o.over[i] = historyEntry{completedAt: cleanup.CompletedAt(z), name: z.Name, uid: z.UID, resourceVersion: z.ResourceVersion}
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	if th.version == version {
		// Findings made with other candidates are no one's any more (a
		// policy changed since): kept, they would grow with every policy
		// renamed, and foresee removals for policies that no longer govern.
		for k, old := range th.byPolicy {
			if old.cands != cands {
				delete(th.byPolicy, k)
			}
		}
		th.byPolicy[pk] = o
	}
	// Stale or not, the finding is as fresh as a walk made now.
	return th, o, nil
}

// enforceHistory removes the oldest zombies of op's targets beyond the
// policy's historyLimit, among those the policy governs. It returns how long
// to wait for the next deletion token, when one is missing.
func (r *CleanupReconciler) enforceHistory(ctx context.Context, gov *arbiterv1alpha1.CleanupPolicy, cands *cleanup.Candidates,
	op *arbiterv1alpha1.ConflictResolutionOperation) (time.Duration, error) {
	for _, t := range op.Spec.Targets {
		th, o, err := r.overHistory(ctx, registry.KeyOf(op.Namespace, t), gov, cands)
		if err != nil {
			return 0, err
		}
		th.mu.Lock()
		next := o.next
		th.mu.Unlock()
		why := fmt.Sprintf("historyLimit %d on %s", *gov.Spec.HistoryLimit, t.Name)
		for i := next; i < len(o.over); i++ {
			e := o.over[i]
			z := &arbiterv1alpha1.ConflictResolutionOperation{}
			err := r.Client.Get(ctx, types.NamespacedName{Namespace: op.Namespace, Name: e.name}, z)
			switch {
			case apierrors.IsNotFound(err), err == nil && z.UID == e.uid && !z.DeletionTimestamp.IsZero():
				// Gone, or going: as foreseen.
			case err != nil:
				return 0, fmt.Errorf("reading %s/%s, over historyLimit: %w", op.Namespace, e.name, err)
			case z.UID != e.uid || z.ResourceVersion != e.resourceVersion:
				// Changed since the walk (or another operation of that
				// name): the change's own judgement, which its event queues,
				// walks the target again.
				th.mu.Lock()
				th.version++
				th.mu.Unlock()
				return 0, nil
			default:
				// A change the cache showed before the watch's predicate
				// marked the finding stale: checked as late as can be.
				th.mu.Lock()
				stale := o.version != th.version
				th.mu.Unlock()
				if stale {
					return 0, nil
				}
				holds := r.holdsTicket(z)
				wait, err := r.remove(ctx, gov, z, why)
				if err != nil || wait > 0 {
					return r.turnOf(op, z, holds, wait), err
				}
			}
			th.mu.Lock()
			o.next = max(o.next, i+1)
			th.mu.Unlock()
		}
	}
	return 0, nil
}

// holdsTicket says whether z already waits for a deletion token.
func (r *CleanupReconciler) holdsTicket(z *arbiterv1alpha1.ConflictResolutionOperation) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.tickets[client.ObjectKeyFromObject(z)]
	return ok
}

// turnOf says how long op's judgement waits when zombie z, next over the
// limit, waits wait for its deletion token. When z is another zombie, its
// own judgement is queued for its token, once, when the token was just
// reserved for it: then op need not come back, and a target's N zombies
// over the limit cost a judgement or two per token, not N. When the queue
// is full, op comes back itself, as before.
func (r *CleanupReconciler) turnOf(op, z *arbiterv1alpha1.ConflictResolutionOperation, held bool, wait time.Duration) time.Duration {
	if wait == 0 || z.UID == op.UID {
		return wait
	}
	if held {
		return 0 // z's own judgement is queued for its token already
	}
	select {
	case r.historyTurns <- event.TypedGenericEvent[*arbiterv1alpha1.ConflictResolutionOperation]{Object: z}:
		return 0
	default:
		return wait
	}
}
