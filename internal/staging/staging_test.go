package staging

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var (
	t0    = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	alice = Key{Group: "bank.example.com", Kind: "Account", Namespace: "bank", Name: "alice"}
	bob   = Key{Group: "bank.example.com", Kind: "Account", Namespace: "bank", Name: "bob"}
)

const window = 100 * time.Millisecond

// n is the ID of the operation named name in the test's namespace.
func n(name string) ID { return ID{Namespace: "bank", Name: name} }

func op(name string, priority int32, stagedAt time.Duration, targets ...Key) Contender {
	return Contender{ID: n(name), UID: "uid-" + name, Priority: priority, StagedAt: t0.Add(stagedAt), Targets: targets}
}

func queuing(c Contender) Contender { c.Queue = true; return c }

func TestRankIsATotalOrder(t *testing.T) {
	tests := []struct {
		name string
		in   []Contender
		want []string
	}{
		{"priority first", []Contender{op("low", 2, 0), op("high", 8, time.Second), op("normal", 5, 0)},
			[]string{"high", "normal", "low"}},
		{"then the earliest stagedAt", []Contender{op("late", 5, 2*time.Microsecond), op("early", 5, time.Microsecond)},
			[]string{"early", "late"}},
		{"then the lowest UID", []Contender{op("b", 5, 0), op("a", 5, 0), op("c", 5, 0)},
			[]string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 { // any input order gives the same result
				in := slices.Clone(tt.in)
				slices.Reverse(tt.in)
				Rank(in)
				var got []string
				for _, c := range in {
					got = append(got, c.ID.Name)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("Rank = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		in   []Contender
		want map[ID]Outcome
	}{{
		name: "one winner, the rest rejected naming it",
		in:   []Contender{op("a", 5, 0, alice), op("b", 8, 0, alice), op("c", 2, 0, alice)},
		want: map[ID]Outcome{n("b"): {Won: true}, n("a"): {Winner: n("b")}, n("c"): {Winner: n("b")}},
	}, {
		name: "queued losers keep waiting",
		in:   []Contender{queuing(op("a", 5, 0, alice)), op("b", 8, 0, alice), op("c", 2, 0, alice)},
		want: map[ID]Outcome{n("b"): {Won: true}, n("a"): {Winner: n("b"), Queued: true}, n("c"): {Winner: n("b")}},
	}, {
		name: "a multi-target operation wins only if it wins every target",
		in:   []Contender{op("both", 5, 0, alice, bob), op("alice-only", 8, 0, alice), op("bob-only", 2, 0, bob)},
		want: map[ID]Outcome{n("alice-only"): {Won: true}, n("both"): {Winner: n("alice-only")}, n("bob-only"): {Won: true}},
	}, {
		name: "a multi-target winner claims both targets",
		in:   []Contender{op("both", 9, 0, alice, bob), op("alice-only", 8, 0, alice), op("bob-only", 2, 0, bob)},
		want: map[ID]Outcome{n("both"): {Won: true}, n("alice-only"): {Winner: n("both")}, n("bob-only"): {Winner: n("both")}},
	}, {
		name: "different targets do not contend",
		in:   []Contender{op("a", 1, 0, alice), op("b", 1, 0, bob)},
		want: map[ID]Outcome{n("a"): {Won: true}, n("b"): {Won: true}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.in)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Decide = %v, want %v", got, tt.want)
			}
		})
	}
}

// verdicts offers every contender (as the controller does on each reconcile)
// and returns their verdict kinds and winners.
func verdicts(a *Arbiter, now time.Time, cs ...Contender) map[string]string {
	out := map[string]string{}
	for _, c := range cs {
		v := a.Offer(c, window, now)
		out[c.ID.Name] = [...]string{"Wait", "Win", "Reject", "Queue"}[v.Kind]
		if v.Winner != (ID{}) {
			out[c.ID.Name] += ":" + v.Winner.Name
		}
	}
	return out
}

func expect(t *testing.T, got map[string]string, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("verdicts = %v, want %v", got, want)
	}
}

func TestArbiterDecidesABatchWhenItsWindowCloses(t *testing.T) {
	a := NewArbiter()
	ops := []Contender{op("p5", 5, 0, alice), op("p8-late", 8, 2*time.Millisecond, alice), op("p8-early", 8, time.Millisecond, alice),
		op("p2", 2, 0, alice), op("p1", 1, 0, alice)}
	expect(t, verdicts(a, t0, ops...), map[string]string{"p5": "Wait", "p8-late": "Wait", "p8-early": "Wait", "p2": "Wait", "p1": "Wait"})

	changed, next := a.Tick(t0.Add(window / 2))
	if len(changed) != 0 || !next.Equal(t0.Add(window)) {
		t.Fatalf("Tick inside the window: changed %v, next %v; want nothing and the window's end", changed, next)
	}
	changed, _ = a.Tick(t0.Add(window))
	if len(changed) != 5 {
		t.Fatalf("Tick at the window's end changed %v, want all 5", changed)
	}
	expect(t, verdicts(a, t0.Add(window), ops...), map[string]string{
		"p8-early": "Win", "p8-late": "Reject:p8-early", "p5": "Reject:p8-early", "p2": "Reject:p8-early", "p1": "Reject:p8-early"})
	if v := a.Offer(ops[0], window, t0.Add(window)); v.BatchSize != 5 {
		t.Errorf("BatchSize = %d, want 5", v.BatchSize)
	}
}

func TestArbiterLetsLateArrivalsWaitForTheNextBatch(t *testing.T) {
	a := NewArbiter()
	first := op("first", 5, 0, alice)
	a.Offer(first, window, t0)
	a.Tick(t0.Add(window))
	a.Settle(n("first"))

	// Arrives while "first" executes, with a higher priority: it waits.
	late := op("late", 8, time.Second, alice)
	now := t0.Add(time.Second)
	expect(t, verdicts(a, now, late), map[string]string{"late": "Wait"})
	if changed, _ := a.Tick(now.Add(time.Hour)); len(changed) != 0 {
		t.Fatalf("decided %v while the target is held", changed)
	}
	a.Forget(n("first"))
	a.Tick(now.Add(time.Hour))
	expect(t, verdicts(a, now, late), map[string]string{"late": "Win"})
}

func TestArbiterRunsQueuedOperationsOneAtATimeInOrder(t *testing.T) {
	a := NewArbiter()
	ops := []Contender{queuing(op("q1", 5, 1, alice)), queuing(op("q2", 5, 2, alice)), queuing(op("q3", 5, 3, alice)), queuing(op("top", 9, 4, alice))}
	verdicts(a, t0, ops...)
	a.Tick(t0.Add(window))
	var order []string
	for remaining := ops; len(remaining) > 0; {
		got := verdicts(a, t0, remaining...)
		var next []Contender
		for _, c := range remaining {
			a.Settle(c.ID)
			if got[c.ID.Name] == "Win" {
				order = append(order, c.ID.Name)
				a.Forget(c.ID) // it finished
			} else {
				next = append(next, c)
			}
		}
		if len(next) == len(remaining) {
			t.Fatalf("no winner among %v: %v", remaining, got)
		}
		remaining = next
		a.Tick(t0.Add(window))
	}
	if want := []string{"top", "q1", "q2", "q3"}; !slices.Equal(order, want) {
		t.Errorf("ran %v, want %v", order, want)
	}
}

func TestArbiterWaitsForEveryTargetOfAMultiTargetContender(t *testing.T) {
	a := NewArbiter()
	onAlice := op("alice-only", 2, 0, alice)
	a.Offer(onAlice, window, t0)
	// Opens bob's batch later, so alice's batch must wait for it.
	both := op("both", 8, 50*time.Millisecond, alice, bob)
	a.Offer(both, window, t0.Add(50*time.Millisecond))

	if changed, next := a.Tick(t0.Add(window)); len(changed) != 0 || !next.Equal(t0.Add(150*time.Millisecond)) {
		t.Fatalf("Tick when only alice's batch closed: changed %v, next %v; want nothing until bob's closes", changed, next)
	}
	a.Tick(t0.Add(150 * time.Millisecond))
	expect(t, verdicts(a, t0, onAlice, both), map[string]string{"both": "Win", "alice-only": "Reject:both"})
}

func TestArbiterPreemptsOnlyAfterTheGracePeriodAndOnlyForHigherPriority(t *testing.T) {
	a := NewArbiter()
	holder := op("holder", 5, 0, alice)
	if !a.Hold(holder, t0, time.Second) {
		t.Fatal("Hold refused a free target")
	}
	if a.Hold(op("other", 5, 0, alice), t0, time.Second) {
		t.Fatal("Hold accepted a target held by another operation")
	}

	lower, equal, higher := op("lower", 3, 100*time.Millisecond, alice), op("equal", 5, 100*time.Millisecond, alice), op("higher", 8, 200*time.Millisecond, alice)
	verdicts(a, t0.Add(100*time.Millisecond), lower, equal)
	a.Tick(t0.Add(5 * time.Second))
	if by, ok := a.Preempted(n("holder")); ok {
		t.Fatalf("preempted by %s, which has no higher priority", by)
	}

	verdicts(a, t0.Add(200*time.Millisecond), higher)
	_, next := a.Tick(t0.Add(300 * time.Millisecond))
	if _, ok := a.Preempted(n("holder")); ok {
		t.Fatal("preempted inside the grace period")
	}
	if !next.Equal(t0.Add(time.Second)) {
		t.Errorf("next = %v, want the end of the grace period", next)
	}
	a.Tick(t0.Add(time.Second))
	if by, ok := a.Preempted(n("holder")); !ok || by != n("higher") {
		t.Fatalf("Preempted = %q, %v; want higher, true", by, ok)
	}

	// The preempted holder stops; the waiting batch is arbitrated as usual.
	a.Forget(n("holder"))
	a.Tick(t0.Add(time.Second))
	expect(t, verdicts(a, t0, lower, equal, higher), map[string]string{"higher": "Win", "equal": "Reject:higher", "lower": "Reject:higher"})
}

// A Tick between a win's Settle and its Started sees a holder with no start
// and so no grace period to wait for: Started must wake the loop, or the
// holder is preempted only at the next unrelated change.
func TestArbiterStartedWakesTheLoop(t *testing.T) {
	a := NewArbiter()
	verdicts(a, t0, op("holder", 5, 0, alice))
	a.Tick(t0.Add(window))
	higher := op("higher", 8, window, alice)
	verdicts(a, t0.Add(window), higher)
	a.Settle(n("holder"))
	for len(a.Changed()) > 0 {
		<-a.Changed()
	}
	if _, next := a.Tick(t0.Add(3 * window)); !next.IsZero() {
		t.Fatalf("next = %v before the holder started; want nothing to wait for", next)
	}
	a.Started(n("holder"), t0.Add(window), 0)
	select {
	case <-a.Changed():
	default:
		t.Fatal("Started did not wake the arbiter loop")
	}
	a.Tick(t0.Add(3 * window))
	if by, ok := a.Preempted(n("holder")); !ok || by != n("higher") {
		t.Fatalf("Preempted = %q, %v; want higher, true", by, ok)
	}
}

func TestArbiterRecoversQueuedOperationsBeforeNewOnes(t *testing.T) {
	a := NewArbiter()
	a.Hold(op("executing", 5, 0, alice), t0, time.Second)
	old := queuing(op("old", 5, 0, alice))
	a.Requeue(old)
	newer := queuing(op("newer", 5, time.Second, alice))
	a.Offer(newer, window, t0.Add(time.Second))
	a.Forget(n("executing"))
	a.Tick(t0.Add(2 * time.Second))
	expect(t, verdicts(a, t0, old, newer), map[string]string{"old": "Win", "newer": "Queue:old"})
}

func TestArbiterKeepsAHoldersStartWhenHeldAgain(t *testing.T) {
	a := NewArbiter()
	holder := op("holder", 1, 0, alice)
	a.Hold(holder, t0.Add(10*time.Second), time.Second) // recovered: a fresh grace period
	a.Hold(holder, t0, time.Second)                     // executing again, with its old status.startedAt
	verdicts(a, t0, op("urgent", 9, 0, alice))
	a.Tick(t0.Add(10*time.Second + 500*time.Millisecond))
	if by, ok := a.Preempted(n("holder")); ok {
		t.Fatalf("preempted by %s inside the grace period that began when it was recovered", by)
	}
	a.Tick(t0.Add(11 * time.Second))
	if _, ok := a.Preempted(n("holder")); !ok {
		t.Fatal("not preempted once that grace period was over")
	}
}

// A finished copy of an operation must not release a newer operation that was
// recreated under its name and holds the target now.
func TestArbiterForgetsOnlyTheSameInstance(t *testing.T) {
	a := NewArbiter()
	a.Hold(op("a", 5, 0, alice), t0, time.Second)
	a.ForgetUID(n("a"), "uid-of-an-older-a")
	b := queuing(op("b", 5, 0, alice))
	verdicts(a, t0, b)
	a.Tick(t0.Add(window))
	expect(t, verdicts(a, t0.Add(window), b), map[string]string{"b": "Wait"}) // a still holds alice

	a.ForgetUID(n("a"), "uid-a")
	a.Tick(t0.Add(window))
	expect(t, verdicts(a, t0.Add(window), b), map[string]string{"b": "Win"})
}

func TestArbiterDoesNotBlockABatchBehindABusyTargetOfAMultiTargetContender(t *testing.T) {
	a := NewArbiter()
	// bob is held by a long execution.
	if !a.Hold(op("long", 5, 0, bob), t0, time.Second) {
		t.Fatal("Hold refused a free target")
	}
	both := op("both", 8, 0, alice, bob)
	onAlice := op("alice-only", 2, 10*time.Millisecond, alice)
	a.Offer(both, window, t0)
	a.Offer(onAlice, window, t0.Add(10*time.Millisecond))

	// alice's batch is decided without the contender that waits on bob.
	a.Tick(t0.Add(window))
	expect(t, verdicts(a, t0, onAlice), map[string]string{"alice-only": "Win"})
	if v := a.Offer(both, window, t0.Add(window)); v.Kind != Wait {
		t.Fatalf("both = %v, want it still waiting for bob", v.Kind)
	}

	// Once alice and bob are both free, it contends for them together.
	a.Forget(n("alice-only"))
	a.Forget(n("long"))
	a.Tick(t0.Add(2 * window))
	expect(t, verdicts(a, t0, both), map[string]string{"both": "Win"})
}

// chainKey is the i-th target of a chain.
func chainKey(i int) Key {
	return Key{Group: "bank.example.com", Kind: "Account", Namespace: "bank", Name: fmt.Sprint("link-", i)}
}

// Multi-target operations chained one to the next, each sharing a target
// with the last, extended by a new open batch (10s window) every 9s: every
// batch of the chain waits for the next. A batch waits so at most
// openBatchPatience: then it is decided without the contenders still
// waiting, and a victim on the chain's first target is not held until its
// timeout.
func TestArbiterDoesNotWaitForAnEverExtendedChainOfOpenBatches(t *testing.T) {
	a := NewArbiter()
	const long = 10 * time.Second
	victim := op("victim", 1, 0, chainKey(0))
	a.Offer(victim, window, t0)
	now := t0
	link := 0
	extend := func() {
		c := op(fmt.Sprint("link-", link), 9, now.Sub(t0), chainKey(link), chainKey(link+1))
		a.Offer(c, long, now)
		link++
	}
	extend()
	var decided bool
	for now.Before(t0.Add(time.Minute)) {
		now = now.Add(9 * time.Second)
		extend()
		a.Tick(now)
		if v := a.Offer(victim, window, now); v.Kind != Wait {
			if !now.After(t0.Add(window + openBatchPatience)) {
				t.Fatalf("victim decided at %v, before its batch had waited openBatchPatience", now.Sub(t0))
			}
			decided = true
			break
		}
	}
	if !decided {
		t.Fatalf("the victim still waits %v after its batch closed, behind a chain of %d links", now.Sub(t0), link)
	}
}

// The wait for open batches is followed along a chain once per target, not
// once per pass over every due target: a Tick over a long chain stays
// linear.
func BenchmarkTickOverAChainOfOpenBatches(b *testing.B) {
	const links = 2000
	for b.Loop() {
		b.StopTimer()
		a := NewArbiter()
		for i := range links {
			// Every batch closes at t0+window but the last, still open.
			w := window
			if i == links-1 {
				w = time.Hour
			}
			a.Offer(op(fmt.Sprint("link-", i), 5, 0, chainKey(i), chainKey(i+1)), w, t0)
		}
		b.StartTimer()
		a.Tick(t0.Add(window))
	}
}

// Each turn of a queued target tells its new winner alone: the operations
// still waiting were told they are queued, and are not told again.
func TestATurnOfAQueueTellsItsWinnerAlone(t *testing.T) {
	a := NewArbiter()
	var ops []Contender
	for i := range 100 {
		ops = append(ops, queuing(op(fmt.Sprint("q", i), 5, time.Duration(i), alice)))
	}
	verdicts(a, t0, ops...)
	changed, _ := a.Tick(t0.Add(window))
	if len(changed) != 100 {
		t.Fatalf("the first decision told %d operations, want all 100", len(changed))
	}
	for _, c := range ops {
		a.Settle(c.ID)
	}
	a.Forget(n("q0")) // the first winner finished
	changed, _ = a.Tick(t0.Add(window))
	if len(changed) != 1 || changed[0] != n("q1") {
		t.Fatalf("the next turn told %v, want q1 alone", changed)
	}
	expect(t, verdicts(a, t0, ops[1], ops[2]), map[string]string{"q1": "Win", "q2": "Wait"})
}
