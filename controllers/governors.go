package controllers

import (
	"context"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/arbiter-dev/arbiter/internal/cleanup"
)

// governorCache keeps each namespace's candidates, as the zombie
// controller and lazy cleanup read them, until a policy's spec, the
// namespace (created, relabelled, deleted) or a ClusterCleanupPolicy
// changes. Without it, every zombie judged copied every policy of its
// namespace: a tenant with a thousand CleanupPolicies and many zombies,
// editing one policy (which judges every zombie again), kept the workers
// every namespace shares busy copying. Reports read policies fresh: they
// compare and write status, which these copies do not follow.
type governorCache struct {
	mu sync.Mutex
	// cluster counts the changes that concern every namespace. changed is
	// each namespace's last change, numbered from next so that no two
	// changes share a number: kept candidates are good while the epoch they
	// were gathered at is still the namespace's.
	cluster, next uint64
	changed       map[string]uint64
	kept          map[string]keptCandidates
	// flight merges the gatherings of a namespace that workers start
	// together, after a change.
	flight singleflight.Group
}

type epoch struct{ cluster, namespace uint64 }

type keptCandidates struct {
	cands *cleanup.Candidates
	at    epoch
}

// epoch is namespace's epoch; g.mu must be held.
func (g *governorCache) epoch(namespace string) epoch {
	return epoch{g.cluster, g.changed[namespace]}
}

// maxNamespaceChanges bounds the change numbers kept, deleted namespaces'
// included: past it, every namespace starts afresh (see policiesChanged).
const maxNamespaceChanges = 10000

// policiesChanged drops the kept candidates of namespace, or of every
// namespace when it is "" (a ClusterCleanupPolicy changed).
func (g *governorCache) policiesChanged(namespace string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if namespace == "" || len(g.changed) >= maxNamespaceChanges {
		// A cluster-wide change also ends every number kept: a cluster
		// that creates and deletes namespaces all day must not grow this
		// map for the manager's life. Every namespace gathers once more.
		g.cluster++
		g.changed, g.kept = nil, nil
		if namespace == "" {
			return
		}
	}
	if g.changed == nil {
		g.changed = map[string]uint64{}
	}
	g.next++
	g.changed[namespace] = g.next
}

// namespaceGone forgets a deleted namespace's candidates. It takes a new
// number, as any change: candidates gathered before the deletion must not
// be kept for a namespace of the same name created later. The number stays
// (a few bytes a name) until maxNamespaceChanges, so that other namespaces
// keep theirs.
func (g *governorCache) namespaceGone(namespace string) {
	g.policiesChanged(namespace)
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.kept, namespace)
}

// governors returns namespace's candidates for judging zombies: kept ones
// while no change they depend on came since they were gathered. Read them,
// never change them: every worker shares them.
func (r *CleanupReconciler) governors(ctx context.Context, namespace string) (*cleanup.Candidates, error) {
	g := &r.governorCache
	g.mu.Lock()
	at := g.epoch(namespace)
	if k, ok := g.kept[namespace]; ok && k.at == at {
		g.mu.Unlock()
		return k.cands, nil
	}
	g.mu.Unlock()
	gather := func() (any, error) {
		g.mu.Lock()
		at := g.epoch(namespace)
		g.mu.Unlock()
		// Gathered from the cache after the epoch was read: a change the
		// cache shows later brings a new epoch, so these are never kept
		// past it.
		cands, err := r.candidates(ctx, namespace)
		if err != nil {
			return nil, err
		}
		k := keptCandidates{cands: cands, at: at}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.epoch(namespace) == at {
			if g.kept == nil {
				g.kept = map[string]keptCandidates{}
			}
			g.kept[namespace] = k
		}
		return k, nil
	}
	v, err, _ := g.flight.Do(namespace, gather)
	if err != nil {
		return nil, err
	}
	// A gathering that began before this caller's epoch may predate a
	// change it must see: then it gathers its own.
	if k := v.(keptCandidates); k.at == at {
		return k.cands, nil
	}
	v, err = gather()
	if err != nil {
		return nil, err
	}
	return v.(keptCandidates).cands, nil
}
