package execute

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// pad is a tenant's own ConfigMap holding 20,000 "a" in data.big.
var pad = `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"pad","namespace":"tenant","uid":"u-2"},` +
	`"data":{"big":"` + strings.Repeat("a", 20000) + `"}}`

// applyToPad compiles expr, which must compile, applies it to pad with
// params, and reports the bytes allocated on the way.
func applyToPad(t *testing.T, expr string, params map[string]any) (out []byte, allocated uint64, err error) {
	t.Helper()
	m, err := Compile(&arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "pad", Expression: expr})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	p, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err = m.Apply(context.Background(), []byte(pad), p)
	runtime.ReadMemStats(&after)
	return out, after.TotalAlloc - before.TotalAlloc, err
}

// The reviewer's expression: 20,000 "a" each replaced by 5,000 "b" would be
// a 100 MB string, at a cost of 8,000.
func TestReplaceIsRefusedBeforeItBuildsAStringPastTheBound(t *testing.T) {
	expr := `[JSONPatch{op: "add", path: "/data/x", value: string(size(object.data.big.replace("a", params.s)))}]`
	_, allocated, err := applyToPad(t, expr, map[string]any{"s": strings.Repeat("b", 5000)})
	var tooLarge *TooLargeError
	if !errors.As(err, &tooLarge) {
		t.Fatalf("Apply error = %v, want a *TooLargeError (the operation ends MutationTooLarge)", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "replace") || !strings.Contains(msg, "1.5 MiB") || !strings.Contains(msg, "100000000 bytes") {
		t.Errorf("error = %q, want it to name replace, the 100000000 bytes it would build and the 1.5 MiB bound", msg)
	}
	if allocated > 10<<20 {
		t.Errorf("the evaluation allocated %d bytes, want under 10 MiB", allocated)
	}
}

func TestReplaceGivesTheSameResultsAsBefore(t *testing.T) {
	tests := []struct {
		name, s, old, new string
		n                 *int
	}{
		{name: "every occurrence", s: "hello hello", old: "he", new: "we"},
		{name: "growing", s: "a-b-c", old: "-", new: " -- "},
		{name: "shrinking", s: "a--b--c", old: "--", new: "-"},
		{name: "to nothing", s: "hello hello", old: "h", new: ""},
		{name: "not found", s: "hello", old: "x", new: "yyyy"},
		{name: "empty old matches at every rune boundary", s: "héllo", old: "", new: "_"},
		{name: "empty string and empty old", s: "", old: "", new: "ab"},
		{name: "unicode", s: "grüße, grüße", old: "ü", new: "ue"},
		{name: "unicode replacement", s: "a.b.c", old: ".", new: "→"},
		{name: "n = 1", s: "hello hello", old: "he", new: "we", n: new(1)},
		{name: "n = 0", s: "hello hello", old: "he", new: "we", n: new(0)},
		{name: "n = -1 is every occurrence", s: "hello hello", old: "he", new: "we", n: new(-1)},
		{name: "n past the occurrences", s: "a.b", old: ".", new: "...", n: new(5)},
		{name: "n with an empty old", s: "héllo", old: "", new: "_", n: new(3)},
		{name: "a result just under the bound", s: strings.Repeat("a", 1000), old: "a", new: strings.Repeat("b", MaxObjectBytes/1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, n := `params.s.replace(params.old, params.new)`, -1
			if tt.n != nil {
				call, n = `params.s.replace(params.old, params.new, params.n)`, *tt.n
			}
			out, _, err := applyToPad(t, `[JSONPatch{op: "add", path: "/data/x", value: `+call+`}]`,
				map[string]any{"s": tt.s, "old": tt.old, "new": tt.new, "n": n})
			want := strings.Replace(tt.s, tt.old, tt.new, n)
			if len(pad)+len(want) > MaxObjectBytes {
				// Past the object's own bound: compare the size alone.
				out, _, err = applyToPad(t, `[JSONPatch{op: "add", path: "/data/x", value: string(size(`+call+`))}]`,
					map[string]any{"s": tt.s, "old": tt.old, "new": tt.new, "n": n})
				want = strconv.Itoa(len([]rune(want)))
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			var cm struct {
				Data map[string]string `json:"data"`
			}
			if err := json.Unmarshal(out, &cm); err != nil {
				t.Fatal(err)
			}
			if cm.Data["x"] != want {
				t.Errorf("replace = %q, want %q", cm.Data["x"], want)
			}
		})
	}
}

// Each of these would build 100 MB or more unbounded, yet costs less than
// the cost limit as Kubernetes charges it.
func TestCELCannotBuildPastTheBound(t *testing.T) {
	s := strings.Repeat("b", 40000)
	ints := make([]int, 10000)
	tests := []struct {
		name, expr string
		// Checked before the call builds its result, or charged for what
		// it built: the cost limit allows 10 MB of strings at most.
		wantErr  string
		maxAlloc uint64
	}{
		{name: "join of 2,500 references to a 40 kB string",
			expr: `string(size(lists.range(2500).map(i, params.s).join()))`, wantErr: "the result of join", maxAlloc: 10 << 20},
		{name: "join with a 40 kB separator",
			expr: `string(size(lists.range(2500).map(i, "x").join(params.s)))`, wantErr: "the result of join", maxAlloc: 10 << 20},
		{name: "format of a list of 2,500 references to a 40 kB string",
			expr: `string(size("%s".format([lists.range(2500).map(i, params.s)])))`, wantErr: "the result of format", maxAlloc: 10 << 20},
		{name: "format with 2,500 verbs",
			expr: `string(size(params.verbs.format(lists.range(2500).map(i, params.s))))`, wantErr: "the result of format", maxAlloc: 10 << 20},
		{name: "flatten of 1,000 references to a list of 10,000",
			expr: `string(size(lists.range(1000).map(i, params.ints).flatten()))`, wantErr: "the result of flatten", maxAlloc: 10 << 20},
		// Each element read from params allocates about 100 bytes on the
		// way, charged 1 as every element of a list a call builds: 1e7
		// elements, 1 GB, unbounded.
		{name: "flatten of one list of 10,000 a thousand times",
			expr: `string(lists.range(1000).map(i, [params.ints].flatten()).size())`, wantErr: "cost limit exceeded", maxAlloc: 200 << 20},
		{name: "concatenations of dyn strings in a comprehension",
			expr: `string(size(lists.range(2500).map(i, params.s + params.s)))`, wantErr: "cost limit exceeded", maxAlloc: 32 << 20},
		{name: "conversions of a dyn string in a comprehension",
			expr: `string(size(lists.range(2500).map(i, bytes(params.s))))`, wantErr: "cost limit exceeded", maxAlloc: 32 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, allocated, err := applyToPad(t, `[JSONPatch{op: "add", path: "/data/x", value: `+tt.expr+`}]`,
				map[string]any{"s": s, "verbs": strings.Repeat("%s", 2500), "ints": ints})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply error = %v, want one saying %q", err, tt.wantErr)
			}
			var tooLarge *TooLargeError
			if strings.HasPrefix(tt.wantErr, "the result") && !errors.As(err, &tooLarge) {
				t.Errorf("Apply error = %v, want a *TooLargeError (the operation ends MutationTooLarge)", err)
			}
			if allocated > tt.maxAlloc {
				t.Errorf("the evaluation allocated %d bytes, want under %d", allocated, tt.maxAlloc)
			}
		})
	}
}

// What an expression returns is measured before it is written out: a list
// of references to one string, or one long path in many operations.
func TestTheReturnedJSONPatchIsMeasuredBeforeItIsCopied(t *testing.T) {
	s := strings.Repeat("b", 40000)
	for name, expr := range map[string]string{
		"a value of 2,500 references to a 40 kB string": `[JSONPatch{op: "add", path: "/data/x", value: lists.range(2500).map(i, params.s)}]`,
		"2,500 operations on a 40 kB path":              `lists.range(2500).map(i, JSONPatch{op: "remove", path: params.s})`,
	} {
		t.Run(name, func(t *testing.T) {
			_, allocated, err := applyToPad(t, expr, map[string]any{"s": s})
			var tooLarge *TooLargeError
			if !errors.As(err, &tooLarge) || !strings.Contains(err.Error(), "the JSON Patch the expression returns") {
				t.Fatalf("Apply error = %v, want a *TooLargeError about the JSON Patch the expression returns", err)
			}
			if allocated > 10<<20 {
				t.Errorf("the evaluation allocated %d bytes, want under 10 MiB", allocated)
			}
		})
	}
}

func TestReplaceIsStillChargedAndStillFailsOnItsArguments(t *testing.T) {
	s := strings.Repeat("b", 40000)
	tests := []struct{ name, expr, wantErr string }{
		// Each replace of 40 kB costs 8,000: a thousand are past the limit.
		{"a loop of replaces", `string(lists.range(1000).map(i, params.s.replace("b", "c")).size())`, "cost limit exceeded"},
		{"a missing field as the string", `object.data.missing.replace("a", "b")`, "no such key: missing"},
		{"a missing field as the replacement", `object.data.big.replace("a", params.missing)`, "no such key: missing"},
		{"a number as the replacement", `object.data.big.replace("a", params.n)`, "no such overload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := applyToPad(t, `[JSONPatch{op: "add", path: "/data/x", value: `+tt.expr+`}]`, map[string]any{"s": s, "n": 1})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply error = %v, want one saying %q", err, tt.wantErr)
			}
			var tooLarge *TooLargeError
			if errors.As(err, &tooLarge) {
				t.Errorf("Apply error = %v, want it not to be a *TooLargeError", err)
			}
		})
	}
}

// The reviewer's operation ends Failed/MutationTooLarge, with nothing
// written, rather than taking the manager down at every recovery.
func TestExecuteFailsTheReplaceBombWithoutWriting(t *testing.T) {
	f := newFakeTargets(t, cm("pad", map[string]string{"big": strings.Repeat("a", 20000)}))
	e := &Executor{Reader: f, Writer: f}
	req := requestFor(arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "pad",
		Expression: `[JSONPatch{op: "add", path: "/data/x", value: string(size(object.data.big.replace("a", params.s)))}]`})
	req.Params = []byte(`{"s":"` + strings.Repeat("b", 5000) + `"}`)
	res, err := e.Execute(context.Background(), req, &Progress{})
	expectTooLargeWithNothingWritten(t, f, res, err)
}
