// Package staging decides which operation wins a target. It holds no client:
// its inputs are plain contenders and the current time, so every rule is
// table-tested without a cluster.
//
// A batch opens for a target when the first pending operation for it is
// offered, and closes its window later; it holds every operation offered by
// then. When it closes and the target is free, the contenders are ranked by a
// total order (effective priority, then stagedAt, then UID) and the first one
// whose every target is still unclaimed wins each of them. A multi-target
// operation thus wins only if it wins all its targets. Losers are rejected or
// queued, as their own onConflict says; queued ones contend again, keeping
// their stagedAt, each time the target is released.
package staging

import (
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// ID identifies an operation: its namespace and name.
type ID = types.NamespacedName

// Key identifies a target object.
type Key struct {
	Group     string
	Kind      string
	Namespace string
	Name      string
}

func (k Key) String() string {
	if k.Group == "" {
		return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name)
	}
	return fmt.Sprintf("%s.%s %s/%s", k.Kind, k.Group, k.Namespace, k.Name)
}

// Contender is an operation as arbitration sees it.
type Contender struct {
	// ID identifies the operation (namespace/name).
	ID ID
	// UID breaks ties between contenders staged at the same instant.
	UID string
	// Priority is the effective priority.
	Priority int32
	// StagedAt is when the operation was first offered.
	StagedAt time.Time
	// Targets are the targets it contends for.
	Targets []Key
	// Queue is true when the operation waits its turn after losing, rather
	// than being rejected (spec.staging.onConflict: Queue).
	Queue bool
}

// Before reports whether a ranks ahead of b: higher priority, then earlier
// stagedAt, then lower UID. It is a strict total order over contenders with
// distinct UIDs.
func Before(a, b Contender) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if !a.StagedAt.Equal(b.StagedAt) {
		return a.StagedAt.Before(b.StagedAt)
	}
	return a.UID < b.UID
}

// Rank sorts contenders into arbitration order.
func Rank(cs []Contender) {
	slices.SortFunc(cs, func(a, b Contender) int {
		switch {
		case Before(a, b):
			return -1
		case Before(b, a):
			return 1
		}
		return 0
	})
}

// Outcome is what a decision does to one contender.
type Outcome struct {
	// Won is true for a winner; it now holds every one of its targets.
	Won bool
	// Winner is, for a loser, the contender that claimed the first of its
	// targets it lost.
	Winner ID
	// Queued is true for a loser that waits its turn instead of being rejected.
	Queued bool
}

// Decide arbitrates contenders whose targets are all free: in rank order,
// each contender claims its targets if none is claimed yet, and otherwise
// loses to the claimer. It returns an outcome for every contender.
func Decide(cs []Contender) map[ID]Outcome {
	ranked := slices.Clone(cs)
	Rank(ranked)
	claimed := map[Key]ID{}
	out := make(map[ID]Outcome, len(ranked))
	for _, c := range ranked {
		var winner ID
		lost := false
		for _, k := range c.Targets {
			if w, ok := claimed[k]; ok {
				winner, lost = w, true
				break
			}
		}
		if lost {
			out[c.ID] = Outcome{Winner: winner, Queued: c.Queue}
			continue
		}
		for _, k := range c.Targets {
			claimed[k] = c.ID
		}
		out[c.ID] = Outcome{Won: true}
	}
	return out
}
