package staging

import (
	"sync"
	"time"
)

// VerdictKind is what an offered operation should do now.
type VerdictKind int

const (
	// Wait means the operation is in an open batch, or its target is busy.
	Wait VerdictKind = iota
	// Win means the operation holds all its targets and may execute.
	Win
	// Reject means the operation lost; it ends Rejected.
	Reject
	// Queue means the operation lost and waits its turn.
	Queue
)

// Verdict is the arbiter's answer to Offer.
type Verdict struct {
	Kind VerdictKind
	// Winner names the operation that beat this one (Reject, Queue).
	Winner ID
	// BatchSize is the number of contenders decided together (Win, Reject, Queue).
	BatchSize int
	// StagedAt is when the operation was first offered: its place in the order.
	StagedAt time.Time
	// Priority is the effective priority the operation contends with: the
	// one it was first offered with.
	Priority int32
}

type memberState int

const (
	pending memberState = iota
	queued
	holding
)

type member struct {
	c       Contender
	state   memberState
	verdict *Verdict
	started time.Time
	grace   time.Duration
	preempt ID
}

type target struct {
	// deadline is when the open batch closes; zero when none is open.
	deadline time.Time
	pending  map[ID]bool
	queued   map[ID]bool
	holder   ID
	// heldSince is when this target's closed batch first waited for a
	// contender's other open batch; zero when it does not wait.
	heldSince time.Time
}

// openBatchPatience bounds how long a closed batch waits for the other,
// still open batches of its contenders: the longest window an operation
// may ask for. Without it, multi-target operations chained one to the
// next (each sharing a target with the last), extended by a new open
// batch before the last closes, would hold every batch of the chain open
// for as long as someone goes on extending it.
const openBatchPatience = 10 * time.Second

// Arbiter keeps the staging state of every target in memory and decides
// batches as they close. It is safe for concurrent use. It keeps nothing
// durable: after a restart, executing and queued operations are registered
// again (Hold, Requeue) before anything is offered.
type Arbiter struct {
	mu      sync.Mutex
	targets map[Key]*target
	members map[ID]*member
	changed chan struct{}
}

// NewArbiter returns an empty arbiter.
func NewArbiter() *Arbiter {
	return &Arbiter{targets: map[Key]*target{}, members: map[ID]*member{}, changed: make(chan struct{}, 1)}
}

// Changed receives after every change that can make a decision due sooner
// (an operation offered, settled, released or forgotten): the loop that
// calls Tick waits on it, so no caller has to remember to wake it.
func (a *Arbiter) Changed() <-chan struct{} { return a.changed }

// signal tells the loop something changed; a signal already waiting covers
// this one.
func (a *Arbiter) signal() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *Arbiter) target(k Key) *target {
	t, ok := a.targets[k]
	if !ok {
		t = &target{pending: map[ID]bool{}, queued: map[ID]bool{}}
		a.targets[k] = t
	}
	return t
}

// Offer stages a pending operation (the first call opens a batch on each of
// its targets that has none, closing window later) and returns what it
// should do now. It is idempotent: calling it again returns the decision
// once one is made, until Settle or Forget.
func (a *Arbiter) Offer(c Contender, window time.Duration, now time.Time) Verdict {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.signal()
	if m, ok := a.members[c.ID]; ok && m.c.UID != c.UID {
		// A new operation under the name of one that was deleted.
		a.forget(m)
	}
	if m, ok := a.members[c.ID]; ok {
		v := Verdict{Kind: Wait}
		switch {
		case m.verdict != nil:
			v = *m.verdict
		case m.state == holding:
			v = Verdict{Kind: Win}
		}
		v.StagedAt, v.Priority = m.c.StagedAt, m.c.Priority
		return v
	}
	a.members[c.ID] = &member{c: c, state: pending}
	for _, k := range c.Targets {
		t := a.target(k)
		if t.deadline.IsZero() {
			t.deadline = now.Add(window)
		}
		t.pending[c.ID] = true
	}
	return Verdict{Kind: Wait, StagedAt: c.StagedAt, Priority: c.Priority}
}

// Requeue registers an operation that was already Queued (after a restart).
func (a *Arbiter) Requeue(c Contender) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.signal()
	if _, ok := a.members[c.ID]; ok {
		return
	}
	a.members[c.ID] = &member{c: c, state: queued}
	for _, k := range c.Targets {
		a.target(k).queued[c.ID] = true
	}
}

// Hold registers an executing operation as the holder of its targets (after
// a restart, before anything is offered), started at started with the given
// grace period; an operation already holding keeps the start it had. It
// returns false when a target is held by another operation.
func (a *Arbiter) Hold(c Contender, started time.Time, grace time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.signal()
	m, ok := a.members[c.ID]
	if ok && m.c.UID != c.UID {
		a.forget(m)
		ok = false
	}
	for _, k := range c.Targets {
		if h := a.target(k).holder; h != (ID{}) && h != c.ID {
			return false
		}
	}
	if !ok {
		m = &member{c: c}
		a.members[c.ID] = m
	}
	if m.state == holding && !m.started.IsZero() {
		// Already holding: its grace period runs from when it first held here.
		started, grace = m.started, m.grace
	}
	a.removeFromTargets(m)
	m.state, m.verdict, m.started, m.grace = holding, nil, started, grace
	for _, k := range c.Targets {
		a.target(k).holder = c.ID
	}
	return true
}

// Started records when a winner began executing and its grace period, from
// which on it may be preempted. It wakes the loop: a Tick since the win saw
// no start, so no grace period to time a preemption by.
func (a *Arbiter) Started(id ID, started time.Time, grace time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m, ok := a.members[id]; ok && m.state == holding {
		m.started, m.grace = started, grace
		a.signal()
	}
}

// Settle acknowledges a verdict once the operation's status records it: a
// rejected operation is forgotten, a queued one waits for its turn.
func (a *Arbiter) Settle(id ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.signal()
	m, ok := a.members[id]
	if !ok || m.verdict == nil {
		return
	}
	switch m.verdict.Kind {
	case Reject:
		a.forget(m)
	default:
		m.verdict = nil
	}
}

// Forget removes an operation everywhere: it finished, was cancelled, timed
// out or was deleted. Targets it held are released.
func (a *Arbiter) Forget(id ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.signal()
	if m, ok := a.members[id]; ok {
		a.forget(m)
	}
}

// ForgetUID is Forget for the operation instance uid only: a finished or
// deleted copy must not release a newer operation recreated under its name.
func (a *Arbiter) ForgetUID(id ID, uid string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.signal()
	if m, ok := a.members[id]; ok && m.c.UID == uid {
		a.forget(m)
	}
}

func (a *Arbiter) forget(m *member) {
	a.removeFromTargets(m)
	delete(a.members, m.c.ID)
}

func (a *Arbiter) removeFromTargets(m *member) {
	for _, k := range m.c.Targets {
		t, ok := a.targets[k]
		if !ok {
			continue
		}
		delete(t.pending, m.c.ID)
		delete(t.queued, m.c.ID)
		if t.holder == m.c.ID {
			t.holder = ID{}
		}
		if len(t.pending) == 0 {
			t.deadline = time.Time{}
		}
		if t.holder == (ID{}) && len(t.pending) == 0 && len(t.queued) == 0 {
			delete(a.targets, k)
		}
	}
}

// Preempted reports whether an executing operation must stop, and for whom.
func (a *Arbiter) Preempted(id ID) (ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m, ok := a.members[id]; ok && m.preempt != (ID{}) {
		return m.preempt, true
	}
	return ID{}, false
}

// Tick decides every batch that is due at now: closed, on a free target,
// with every contender's other targets due too. It also marks for preemption
// each holder past its grace period whose target a strictly higher priority
// operation waits for. It returns the operations whose verdict changed, and
// when Tick next has something to do (zero: nothing scheduled).
func (a *Arbiter) Tick(now time.Time) (changed []ID, next time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()

	due, waitEnds := a.contendersDue(now)
	changed = a.decide(due)
	preempted, next := a.preempt(now)
	next = earliest(next, waitEnds)
	// A preempted holder is told at once: it may be backing off, with
	// nothing to wake it until then.
	changed = append(changed, preempted...)
	for _, t := range a.targets {
		if now.Before(t.deadline) {
			next = earliest(next, t.deadline)
		}
	}
	return changed, next
}

// contendersDue are the contenders to decide at now: those whose every
// target is free with its batch closed. waitEnds is when the earliest batch
// that waits for an open one stops waiting (zero: none waits).
func (a *Arbiter) contendersDue(now time.Time) (cs []Contender, waitEnds time.Time) {
	due := map[Key]bool{}
	var open []Key // free targets whose batch is still open
	for k, t := range a.targets {
		switch {
		case t.holder != (ID{}) || len(t.pending) == 0 && len(t.queued) == 0:
			t.heldSince = time.Time{}
		case now.Before(t.deadline):
			t.heldSince = time.Time{}
			open = append(open, k)
		default:
			due[k] = true
		}
	}
	// A contender is decided only when all its targets are due. While one
	// of its other batches is still open, the batches it belongs to wait for
	// it, and so on along the contenders they share (a window is short and
	// bounded), but each for openBatchPatience at most: then it is decided
	// without the contenders that still wait, as if their open target were
	// busy. One that waits on a busy target sits this decision out at once:
	// an execution can take as long as its timeout, and nothing else should
	// wait that long behind it. Each target is visited once.
	for len(open) > 0 {
		t := a.targets[open[len(open)-1]]
		open = open[:len(open)-1]
		t.eachContender(func(id ID) {
			for _, k := range a.members[id].c.Targets {
				if !due[k] {
					continue
				}
				held := a.targets[k]
				if held.heldSince.IsZero() {
					held.heldSince = now
				}
				ends := held.heldSince.Add(openBatchPatience)
				if !now.Before(ends) {
					continue // waited long enough
				}
				waitEnds = earliest(waitEnds, ends)
				delete(due, k)
				open = append(open, k)
			}
		})
	}
	seen := map[ID]bool{}
	for k := range due {
		t := a.targets[k]
		t.heldSince = time.Time{}
		t.eachContender(func(id ID) {
			if seen[id] {
				return
			}
			seen[id] = true
			if c := a.members[id].c; allDue(due, c.Targets) {
				cs = append(cs, c)
			}
		})
	}
	return cs, waitEnds
}

// decide arbitrates cs, records each verdict and returns who got one.
func (a *Arbiter) decide(cs []Contender) (changed []ID) {
	// A contender's batch size is the number of contenders on its busiest target.
	perTarget := map[Key]int{}
	for _, c := range cs {
		for _, k := range c.Targets {
			perTarget[k]++
		}
	}
	outcomes := Decide(cs)
	for id, o := range outcomes {
		m := a.members[id]
		size := 0
		for _, k := range m.c.Targets {
			size = max(size, perTarget[k])
		}
		a.removeFromTargets(m)
		v := &Verdict{BatchSize: size, Winner: o.Winner}
		switch {
		case o.Won:
			v.Kind = Win
			m.state = holding
			for _, k := range m.c.Targets {
				a.target(k).holder = id
			}
		case o.Queued && m.state == queued:
			// Queued again, as its status already says: nothing to tell
			// it. Telling every waiting operation at each turn of its
			// target would cost a queue of N some N²/2 reconciles.
			continue
		case o.Queued:
			v.Kind = Queue
			m.state = queued
		default:
			v.Kind = Reject
		}
		m.verdict = v
		changed = append(changed, id)
	}
	// Queued losers wait on all their targets again, behind the winners.
	for id, o := range outcomes {
		if o.Queued {
			for _, k := range a.members[id].c.Targets {
				a.target(k).queued[id] = true
			}
		}
	}
	return changed
}

// preempt marks holders to preempt at now, returns them, and when the next
// grace period that matters ends.
func (a *Arbiter) preempt(now time.Time) (marked []ID, next time.Time) {
	for _, t := range a.targets {
		if t.holder == (ID{}) || now.Before(t.deadline) {
			continue
		}
		h := a.members[t.holder]
		if h.preempt != (ID{}) || h.started.IsZero() {
			continue
		}
		var best *Contender
		for id := range t.pending {
			c := a.members[id].c
			if c.Priority > h.c.Priority && (best == nil || Before(c, *best)) {
				best = &c
			}
		}
		if best == nil {
			continue
		}
		if graceEnds := h.started.Add(h.grace); now.Before(graceEnds) {
			next = earliest(next, graceEnds)
			continue
		}
		h.preempt = best.ID
		marked = append(marked, h.c.ID)
	}
	return marked, next
}

// earliest is the earlier of two wake-up times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func allDue(due map[Key]bool, keys []Key) bool {
	for _, k := range keys {
		if !due[k] {
			return false
		}
	}
	return true
}

// eachContender calls f with each operation contending for the target:
// pending and queued.
func (t *target) eachContender(f func(ID)) {
	for id := range t.pending {
		f(id)
	}
	for id := range t.queued {
		f(id)
	}
}
