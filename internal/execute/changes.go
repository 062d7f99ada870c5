package execute

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"

	"github.com/go-openapi/jsonpointer"
)

// change is one leaf an operation wrote: its value before and after. A
// rollback restores before only where the target still holds after.
type change struct {
	path      []string
	before    any
	hadBefore bool
	after     any
	hasAfter  bool
}

func (c change) pointer() string {
	escaped := make([]string, len(c.path))
	for i, p := range c.path {
		escaped[i] = jsonpointer.Escape(p)
	}
	return "/" + strings.Join(escaped, "/")
}

// bookkeeping are fields the API server or arbiter itself maintains; they are
// never part of what an operation wrote.
var bookkeeping = [][]string{
	{"metadata", "resourceVersion"},
	{"metadata", "generation"},
	{"metadata", "managedFields"},
	{"metadata", "annotations", "arbiter.dev/applied"},
	{"status"},
}

// diff lists the leaves that differ between two objects, in a stable order.
// Lists are compared as leaves.
func diff(before, after map[string]any) []change {
	var out []change
	var walk func(path []string, b, a map[string]any)
	walk = func(path []string, b, a map[string]any) {
		keys := slices.Sorted(maps.Keys(b))
		for k := range a {
			if _, ok := b[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		for _, k := range keys {
			p := append(slices.Clone(path), k)
			if isBookkeeping(p) {
				continue
			}
			bv, bok := b[k]
			av, aok := a[k]
			bm, bIsMap := bv.(map[string]any)
			am, aIsMap := av.(map[string]any)
			switch {
			case bok && aok && bIsMap && aIsMap:
				walk(p, bm, am)
			case bok != aok || !reflect.DeepEqual(bv, av):
				out = append(out, change{path: p, before: bv, hadBefore: bok, after: av, hasAfter: aok})
			}
		}
	}
	walk(nil, before, after)
	return out
}

// withoutBookkeeping is v, at path in its object, without the bookkeeping
// fields beneath it.
func withoutBookkeeping(path []string, v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := make(map[string]any, len(m))
	for k, e := range m {
		p := append(slices.Clone(path), k)
		if !isBookkeeping(p) {
			out[k] = withoutBookkeeping(p, e)
		}
	}
	return out
}

func isBookkeeping(path []string) bool {
	for _, b := range bookkeeping {
		if slices.Equal(path, b) {
			return true
		}
	}
	return false
}

// lookup returns the value at path, and whether it is there.
func lookup(doc map[string]any, path []string) (any, bool) {
	var cur any = doc
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// holdsBefore reports whether doc holds, at every path the changes wrote,
// what was there before them: the changes are undone.
func holdsBefore(doc map[string]any, changes []change) bool {
	for _, c := range changes {
		cur, ok := lookup(doc, c.path)
		if ok != c.hadBefore || ok && !reflect.DeepEqual(normalize(withoutBookkeeping(c.path, cur)), normalize(c.before)) {
			return false
		}
	}
	return true
}

// revert restores the changes in doc, only where doc still holds what the
// operation wrote. It returns the pointers that no longer did: someone
// changed them since, and only a human can say what they should be.
func revert(doc map[string]any, changes []change) (changed []string) {
	for _, c := range changes {
		cur, ok := lookup(doc, c.path)
		// A map the operation created (annotations, say) also holds
		// arbiter's record, which the restore removes on its own.
		if ok != c.hasAfter || !reflect.DeepEqual(normalize(withoutBookkeeping(c.path, cur)), normalize(c.after)) {
			changed = append(changed, c.pointer())
		}
	}
	if len(changed) > 0 {
		return changed
	}
	for _, c := range changes {
		parent := doc
		for _, p := range c.path[:len(c.path)-1] {
			next, ok := parent[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				parent[p] = next
			}
			parent = next
		}
		leaf := c.path[len(c.path)-1]
		if c.hadBefore {
			parent[leaf] = c.before
		} else {
			delete(parent, leaf)
		}
	}
	return nil
}

// normalize makes numbers comparable whatever decoder produced them: an
// object read back from the API server has int64 where a patched document
// may have float64. Integers stay int64, so that two large ones never
// compare equal by rounding to the same float.
func normalize(v any) any {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case float64:
		if n == math.Trunc(n) && n >= math.MinInt64 && n < math.MaxInt64 {
			return int64(n)
		}
		return n
	case map[string]any:
		out := make(map[string]any, len(n))
		for k, e := range n {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, e := range n {
			out[i] = normalize(e)
		}
		return out
	}
	return v
}

func describe(changes []change) string {
	ptrs := make([]string, len(changes))
	for i, c := range changes {
		ptrs[i] = c.pointer()
	}
	return fmt.Sprint(ptrs)
}
