package metrics

import (
	"fmt"
	"testing"
)

func TestFunctionLabelsAreBounded(t *testing.T) {
	b := boundedLabel{max: 3}
	for i := range 3 {
		if got := b.of(fmt.Sprint("f", i)); got != fmt.Sprint("f", i) {
			t.Fatalf("label of f%d = %q, want its own", i, got)
		}
	}
	if got := b.of("f3"); got != OtherFunction {
		t.Fatalf("label past the bound = %q, want %q", got, OtherFunction)
	}
	if got := b.of("f1"); got != "f1" {
		t.Fatalf("a name seen before the bound = %q, want its own", got)
	}
	if len(b.seen) != 3 {
		t.Fatalf("%d names remembered, want 3", len(b.seen))
	}
}
