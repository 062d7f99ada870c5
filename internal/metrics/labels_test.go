package metrics

import (
	"fmt"
	"testing"
)

func TestFunctionLabelsAreBounded(t *testing.T) {
	b := boundedLabel{max: 3, perNamespace: 3}
	for i := range 3 {
		if got := b.of("a", fmt.Sprint("f", i)); got != fmt.Sprint("f", i) {
			t.Fatalf("label of f%d = %q, want its own", i, got)
		}
	}
	if got := b.of("b", "f3"); got != OtherFunction {
		t.Fatalf("label past the bound = %q, want %q", got, OtherFunction)
	}
	if got := b.of("b", "f1"); got != "f1" {
		t.Fatalf("a name seen before the bound = %q, want its own", got)
	}
	if len(b.seen) != 3 {
		t.Fatalf("%d names remembered, want 3", len(b.seen))
	}
}

// A tenant inventing function names takes up its namespace's share of the
// bound, not the names every other namespace would get.
func TestOneNamespaceTakesItsShareOfFunctionLabels(t *testing.T) {
	b := boundedLabel{max: MaxFunctions, perNamespace: MaxFunctionsPerNamespace}
	for i := range 1000 {
		want := fmt.Sprint("hostile-", i)
		if i >= MaxFunctionsPerNamespace {
			want = OtherFunction
		}
		if got := b.of("hostile", fmt.Sprint("hostile-", i)); got != want {
			t.Fatalf("the hostile namespace's name %d = %q, want %q", i, got, want)
		}
	}
	if got := b.of("bank", "credit"); got != "credit" {
		t.Fatalf("another namespace's first name = %q, want its own", got)
	}
	// A name already brought in is shared, whatever the namespace's share.
	if got := b.of("hostile", "credit"); got != "credit" {
		t.Fatalf("a name another namespace brought in = %q, want it shared", got)
	}
	if got := b.of("bank", "hostile-3"); got != "hostile-3" {
		t.Fatalf("a name the hostile namespace brought in = %q, want it shared", got)
	}
}
