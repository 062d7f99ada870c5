package staging

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// FuzzDecide builds contenders from fuzzed bytes and checks the decision is a
// function of the set alone (any input order gives the same outcomes), that
// no target gets two winners, and that every loser names a winner it shares
// a target with.
func FuzzDecide(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{10, 10, 10, 0, 0, 0, 255, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		var cs []Contender
		for i := 0; i+2 < len(data) && len(cs) < 64; i += 3 {
			targets := []Key{{Kind: "Account", Namespace: "bank", Name: fmt.Sprint(data[i] % 7)}}
			if data[i+1]%3 == 0 {
				if other := (Key{Kind: "Account", Namespace: "bank", Name: fmt.Sprint(data[i+1] % 7)}); other != targets[0] {
					targets = append(targets, other)
				}
			}
			cs = append(cs, Contender{ID: ID{Namespace: "bank", Name: fmt.Sprint("op-", len(cs))}, UID: fmt.Sprintf("uid-%03d", len(cs)),
				Priority: int32(data[i+2]%10 + 1), StagedAt: t0.Add(time.Duration(data[i+1]%4) * time.Millisecond),
				Targets: targets, Queue: data[i]%2 == 0})
		}
		first := Decide(cs)
		reversed := slices.Clone(cs)
		slices.Reverse(reversed)
		if fmt.Sprint(Decide(reversed)) != fmt.Sprint(first) {
			t.Fatalf("the decision depends on input order: %v vs %v", first, Decide(reversed))
		}
		holder := map[Key]ID{}
		targetsOf := map[ID][]Key{}
		for _, c := range cs {
			targetsOf[c.ID] = c.Targets
			if first[c.ID].Won {
				for _, k := range c.Targets {
					if h, ok := holder[k]; ok {
						t.Fatalf("%s and %s both won %s", h, c.ID, k)
					}
					holder[k] = c.ID
				}
			}
		}
		for _, c := range cs {
			o := first[c.ID]
			if o.Won {
				continue
			}
			if !first[o.Winner].Won || !slices.ContainsFunc(c.Targets, func(k Key) bool { return holder[k] == o.Winner }) {
				t.Fatalf("%s lost to %s, which does not hold any of its targets", c.ID, o.Winner)
			}
		}
	})
}
