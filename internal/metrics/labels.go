package metrics

import "sync"

// MaxFunctions bounds the function label: the names users choose for their
// operations become series, so a tenant creating operations under ever new
// names would otherwise grow the manager's memory and every scrape without
// end. The first MaxFunctions names seen keep their own series; every later
// one is counted as OtherFunction.
const MaxFunctions = 100

// MaxFunctionsPerNamespace is how many of the MaxFunctions names one
// namespace may be the first to use: a tenant inventing names takes up its
// share, not every other namespace's. A name another namespace brought in
// is shared and costs no share.
const MaxFunctionsPerNamespace = 10

// OtherFunction is the function label of the names past MaxFunctions.
const OtherFunction = "other"

// functions remembers the function names that have a series of their own.
var functions = boundedLabel{max: MaxFunctions, perNamespace: MaxFunctionsPerNamespace}

// FunctionLabel is the function label for name, used in namespace.
func FunctionLabel(namespace, name string) string { return functions.of(namespace, name) }

type boundedLabel struct {
	mu                sync.Mutex
	max, perNamespace int
	seen              map[string]bool
	// broughtIn counts the names each namespace was the first to use.
	broughtIn map[string]int
}

func (b *boundedLabel) of(namespace, value string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[value] {
		return value
	}
	if len(b.seen) >= b.max || b.broughtIn[namespace] >= b.perNamespace {
		return OtherFunction
	}
	if b.seen == nil {
		b.seen, b.broughtIn = map[string]bool{}, map[string]int{}
	}
	b.seen[value] = true
	b.broughtIn[namespace]++
	return value
}

// forget drops what namespace brought in, once it is deleted: the names
// stay shared (others may use them), its share does not outlive it.
func (b *boundedLabel) forget(namespace string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.broughtIn, namespace)
}
