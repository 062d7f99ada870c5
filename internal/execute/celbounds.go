package execute

import (
	"fmt"
	"math"
	"strings"

	"github.com/google/cel-go/cel"
	celcommon "github.com/google/cel-go/common"
	"github.com/google/cel-go/common/functions"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
	"k8s.io/apiserver/pkg/cel/library"
	"k8s.io/apiserver/pkg/cel/mutation/dynamic"
)

// Kubernetes' CEL cost model charges a call after it returns, and for some
// functions by the size of their input alone: 40 kB of "a" replaced by 40 kB
// of "b" costs 8,000 yet builds 1.6 GB before the cost is looked at. The
// functions whose result can outgrow their input by a factor the expression
// chooses are bounded here before they build it; every call is also charged
// for the strings and lists it returns, so many small results cannot add up
// to what one large one may not be.

// maxListElements bounds the lists a call may build: a JSON list takes two
// bytes an element at least, so a longer one could never be stored.
const maxListElements = MaxObjectBytes / 2

// growingFunctions are the functions whose result can outgrow their input by
// a factor the expression chooses, by overload ID, with the check each runs
// on its arguments before the function builds its result.
var growingFunctions = map[string]struct {
	function string
	check    func(args []ref.Val) error
}{
	"string_replace_string_string":     {"replace", checkReplace},
	"string_replace_string_string_int": {"replace", checkReplace},
	"list_join":                        {"join", checkJoin},
	"list_join_string":                 {"join", checkJoin},
	"string_format":                    {"format", checkFormat},
	"list_flatten":                     {"flatten", checkFlatten},
	"list_flatten_int":                 {"flatten", checkFlatten},
}

// boundGrowingFunctions returns env with each of growingFunctions' overloads
// rebound to its check followed by the environment's own implementation, so
// their results are exactly what they were. Rebinding an overload under its
// own ID and signature, which cel-go allows, changes nothing else: cel-go
// still evaluates the arguments (an error or unknown among them ends the call
// before it runs), and the cost tracker still charges the call by its
// function and overload.
func boundGrowingFunctions(env *cel.Env) (*cel.Env, error) {
	var opts []cel.EnvOption
	bound := map[string]bool{}
	for name, fn := range env.Functions() {
		impls, err := fn.Bindings()
		if err != nil {
			return nil, err
		}
		for _, o := range fn.OverloadDecls() {
			g, ok := growingFunctions[o.ID()]
			if !ok || g.function != name {
				continue
			}
			var impl *functions.Overload
			for _, i := range impls {
				if i.Operator == o.ID() {
					impl = i
				}
			}
			if impl == nil {
				return nil, fmt.Errorf("%s has no implementation to bound", o.ID())
			}
			overload := cel.Overload
			if o.IsMemberFunction() {
				overload = cel.MemberOverload
			}
			opts = append(opts, cel.Function(name, overload(o.ID(), o.ArgTypes(), o.ResultType(),
				cel.FunctionBinding(checked(g.check, impl)))))
			bound[o.ID()] = true
		}
	}
	for id := range growingFunctions {
		if !bound[id] {
			return nil, fmt.Errorf("%s is not in the environment", id)
		}
	}
	return env.Extend(opts...)
}

// checked runs check on a call's arguments, and impl only if check passes.
func checked(check func([]ref.Val) error, impl *functions.Overload) functions.FunctionOp {
	return func(args ...ref.Val) ref.Val {
		if err := check(args); err != nil {
			return types.WrapErr(err)
		}
		switch {
		case len(args) == 1 && impl.Unary != nil:
			return impl.Unary(args[0])
		case len(args) == 2 && impl.Binary != nil:
			return impl.Binary(args[0], args[1])
		default:
			return impl.Function(args...)
		}
	}
}

// checkReplace bounds s.replace(old, new[, n]) by the length of its result,
// counted without building it: an empty old matches at every rune boundary,
// as strings.Replace does.
func checkReplace(args []ref.Val) error {
	s, okS := args[0].(types.String)
	old, okOld := args[1].(types.String)
	repl, okNew := args[2].(types.String)
	if !okS || !okOld || !okNew || len(repl) <= len(old) {
		return nil // the implementation refuses the types; or the result is no longer than s
	}
	count := int64(strings.Count(string(s), string(old)))
	if len(args) == 4 {
		if n, ok := args[3].(types.Int); ok && n >= 0 && int64(n) < count {
			count = int64(n)
		}
	}
	growth := int64(len(repl) - len(old))
	if count > (math.MaxInt64-int64(len(s)))/growth {
		return &TooLargeError{What: "the result of replace", Bytes: math.MaxInt64}
	}
	if size := int64(len(s)) + count*growth; size > MaxObjectBytes {
		return &TooLargeError{What: "the result of replace", Bytes: size}
	}
	return nil
}

// checkJoin bounds list.join([separator]) by the length of its result.
func checkJoin(args []ref.Val) error {
	list, ok := args[0].(traits.Lister)
	if !ok {
		return nil
	}
	var sep int64
	if len(args) == 2 {
		if s, ok := args[1].(types.String); ok {
			sep = int64(len(s))
		}
	}
	var size int64
	n, _ := list.Size().(types.Int)
	for i := types.Int(0); i < n; i++ {
		if i > 0 {
			size += sep
		}
		if s, ok := list.Get(i).(types.String); ok {
			size += int64(len(s))
		}
		if size > MaxObjectBytes {
			return &TooLargeError{What: "the result of join", Bytes: size}
		}
	}
	return nil
}

// checkFormat bounds s.format(args) by the format and the values it
// formats: every value is written once at most, and at least as long as the
// bytes of its strings.
func checkFormat(args []ref.Val) error {
	s, _ := args[0].(types.String)
	if size := int64(len(s)) + celSize(args[1], MaxObjectBytes-int64(len(s))); size > MaxObjectBytes {
		return &TooLargeError{What: "the result of format", Bytes: size}
	}
	return nil
}

// checkFlatten bounds list.flatten([depth]) by the elements of its result.
func checkFlatten(args []ref.Val) error {
	list, ok := args[0].(traits.Lister)
	if !ok {
		return nil
	}
	depth := int64(1)
	if len(args) == 2 {
		d, ok := args[1].(types.Int)
		if !ok || d < 0 {
			return nil // the implementation refuses it
		}
		depth = int64(d)
	}
	// Nested lists are counted too, so a walk over lists of empty lists
	// stops as soon as one over their elements would.
	budget := int64(maxListElements)
	var count func(l traits.Lister, depth int64)
	count = func(l traits.Lister, depth int64) {
		n, _ := l.Size().(types.Int)
		for i := types.Int(0); i < n && budget >= 0; i++ {
			budget--
			if nested, ok := l.Get(i).(traits.Lister); ok && depth > 0 {
				count(nested, depth-1)
			}
		}
	}
	count(list, depth)
	if budget < 0 {
		return &TooLargeError{What: "the result of flatten", Bytes: 2 * (maxListElements + 1)}
	}
	return nil
}

// celSize is a lower bound on the bytes v takes once written out, as JSON or
// by format: the bytes of its strings, and one for every other value and
// every element. It stops counting past limit.
func celSize(v any, limit int64) int64 {
	var size int64
	var walk func(v any)
	walk = func(v any) {
		if size > limit {
			return
		}
		switch v := v.(type) {
		case types.String:
			size += int64(len(v))
		case types.Bytes:
			size += int64(len(v))
		case string:
			size += int64(len(v))
		case []byte:
			size += int64(len(v))
		case traits.Lister:
			size++
			n, _ := v.Size().(types.Int)
			for i := types.Int(0); i < n && size <= limit; i++ {
				size++
				walk(v.Get(i))
			}
		case traits.Mapper:
			size++
			for it := v.Iterator(); it.HasNext() == types.True && size <= limit; {
				k := it.Next()
				size++
				walk(k)
				walk(v.Get(k))
			}
		case []any:
			size++
			for _, e := range v {
				if size > limit {
					return
				}
				size++
				walk(e)
			}
		case map[string]any:
			size++
			for k, e := range v {
				if size > limit {
					return
				}
				size += 1 + int64(len(k))
				walk(e)
			}
		case *dynamic.ObjectVal:
			// An object value, as Object{...} builds, is walked as the map
			// it converts to.
			if native, ok := v.Value().(map[string]any); ok {
				walk(native)
				return
			}
			size++
		default:
			size++
		}
	}
	walk(v)
	return size
}

// growthCharged charges every call at least for the strings, bytes and lists
// it returns (a byte at the rate Kubernetes charges a typed string
// concatenation, an element as cel-go charges lists.range), or what
// Kubernetes' estimator charges if that is more. A concatenation of dyn values
// (params.s + params.s) otherwise costs 1, and a comprehension could build
// gigabytes of such strings within the cost limit. Where Kubernetes'
// estimator has no charge, cel-go's own for a call returning a string or a
// list is no more than this one, so it replaces it.
type growthCharged struct {
	library.CostEstimator
}

func (e *growthCharged) CallCost(function, overloadID string, args []ref.Val, result ref.Val) *uint64 {
	cost := e.CostEstimator.CallCost(function, overloadID, args, result)
	floor := resultCost(function, result)
	switch {
	case floor == 0:
		return cost
	case cost == nil || *cost < floor:
		return &floor
	}
	return cost
}

// resultCost is what a call returning result is charged at least.
func resultCost(function string, result ref.Val) uint64 {
	switch r := result.(type) {
	case types.String:
		return uint64(math.Ceil(float64(len(r)) * celcommon.StringTraversalCostFactor))
	case types.Bytes:
		return uint64(math.Ceil(float64(len(r)) * celcommon.StringTraversalCostFactor))
	case traits.Lister:
		if function == operators.Add {
			return 0 // a list concatenation is a view on its operands: it copies nothing
		}
		n, _ := r.Size().(types.Int)
		return uint64(n)
	}
	return 0
}

// chargeFlattenResult charges flatten for the list it returns as well as
// for its input times its depth, which is all ext's own tracker charges.
func chargeFlattenResult(args []ref.Val, result ref.Val) *uint64 {
	depth := uint64(1)
	if len(args) == 2 {
		if d, ok := args[1].(types.Int); ok && d > 0 {
			// flatten lets no list through with more elements, so none nested deeper: capped, the product cannot overflow.
			depth = min(uint64(d), maxListElements)
		}
	}
	var input uint64
	if l, ok := args[0].(traits.Lister); ok {
		n, _ := l.Size().(types.Int)
		input = uint64(n)
	}
	cost := 1 + input*depth + resultCost("flatten", result)
	return &cost
}

// boundedCostOptions are the program options that charge calls for what they
// build.
var boundedCostOptions = []cel.ProgramOption{
	cel.CostTracking(&growthCharged{}),
	cel.CostTrackerOptions(
		interpreter.OverloadCostTracker("list_flatten", chargeFlattenResult),
		interpreter.OverloadCostTracker("list_flatten_int", chargeFlattenResult),
	),
}
