package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
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

// A deleted namespace's series go, and so does what it brought in of the
// function names: a cluster that creates and deletes namespaces all day
// does not grow every scrape.
func TestADeletedNamespacesSeriesGo(t *testing.T) {
	for _, ns := range []string{"ci-1", "bank"} {
		OperationsTotal.WithLabelValues(ns, FunctionLabel(ns, "f-"+ns), "Succeeded", "Applied").Inc()
		CleanupTotal.WithLabelValues(ns, "Immediate", "success").Inc()
	}
	defer ForgetNamespace("bank")
	ForgetNamespace("ci-1")
	for _, c := range []*prometheus.CounterVec{OperationsTotal, CleanupTotal} {
		ch := make(chan prometheus.Metric, 16)
		c.Collect(ch)
		close(ch)
		for m := range ch {
			var d dto.Metric
			if err := m.Write(&d); err != nil {
				t.Fatal(err)
			}
			for _, l := range d.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == "ci-1" {
					t.Errorf("%s still has a series of the deleted namespace ci-1", m.Desc())
				}
			}
		}
		if n := testutil.CollectAndCount(c); n < 1 {
			t.Errorf("%d series left; bank's should stay", n)
		}
	}
	functions.mu.Lock()
	_, kept := functions.broughtIn["ci-1"]
	functions.mu.Unlock()
	if kept {
		t.Error("the deleted namespace's share of function names is kept")
	}
}
