package metrics

import "sync"

// MaxFunctions bounds the function label: the names users choose for their
// operations become series, so a tenant creating operations under ever new
// names would otherwise grow the manager's memory and every scrape without
// end. The first MaxFunctions names seen keep their own series; every later
// one is counted as OtherFunction.
const MaxFunctions = 100

// OtherFunction is the function label of the names past MaxFunctions.
const OtherFunction = "other"

// functions remembers the function names that have a series of their own.
var functions = boundedLabel{max: MaxFunctions}

// FunctionLabel is the function label for name.
func FunctionLabel(name string) string { return functions.of(name) }

type boundedLabel struct {
	mu   sync.Mutex
	max  int
	seen map[string]bool
}

func (b *boundedLabel) of(value string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[value] {
		return value
	}
	if len(b.seen) >= b.max {
		return OtherFunction
	}
	if b.seen == nil {
		b.seen = map[string]bool{}
	}
	b.seen[value] = true
	return value
}
