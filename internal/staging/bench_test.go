package staging

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkDecide measures arbitration of n contenders spread over n/5
// targets, as in a storm of five operations per target.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		cs := make([]Contender, n)
		for i := range cs {
			k := Key{Group: "bank.example.com", Kind: "Account", Namespace: "bank", Name: fmt.Sprintf("acct-%d", i/5)}
			cs[i] = Contender{ID: ID{Namespace: "bank", Name: fmt.Sprintf("op-%d", i)}, UID: fmt.Sprintf("uid-%08d", i),
				Priority: int32(i%10 + 1), StagedAt: t0.Add(time.Duration(i) * time.Microsecond), Targets: []Key{k}}
		}
		b.Run(fmt.Sprintf("contenders=%d", n), func(b *testing.B) {
			for b.Loop() {
				Decide(cs)
			}
		})
	}
}

// BenchmarkArbiterBatch measures a whole batch through the arbiter: n
// offers, the decision, and every verdict read back.
func BenchmarkArbiterBatch(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("contenders=%d", n), func(b *testing.B) {
			for b.Loop() {
				a := NewArbiter()
				for i := range n {
					a.Offer(Contender{ID: ID{Namespace: "bank", Name: fmt.Sprintf("op-%d", i)}, UID: fmt.Sprint(i), Priority: int32(i%10 + 1),
						StagedAt: t0, Targets: []Key{{Kind: "Account", Namespace: "bank", Name: fmt.Sprintf("acct-%d", i/5)}}}, window, t0)
				}
				a.Tick(t0.Add(window))
			}
		})
	}
}
