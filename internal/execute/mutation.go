// Package execute turns an operation's mutation into a new target object and
// writes it: mutation evaluation (JSON Patch, JSON Merge Patch, or a CEL
// expression in MutatingAdmissionPolicy's JSONPatch form), the optimistic
// concurrency apply, the exactly-once record and rollback.
package execute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/traits"
	"google.golang.org/protobuf/types/known/structpb"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/version"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/common"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/apiserver/pkg/cel/library"
	"k8s.io/apiserver/pkg/cel/mutation"
	"k8s.io/apiserver/pkg/cel/mutation/dynamic"
	"k8s.io/utils/lru"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// MutationError is a mutation that is malformed or cannot be applied to the
// target as it is: the operation fails with reason InvalidMutation and the
// target is left untouched.
type MutationError struct {
	// Target names the target, as kind/name.
	Target string
	// Field is the target's field at fault, relative to the target (for
	// example "expression" or "jsonPatch[0].value"), when one is.
	Field string
	Err   error
}

func (e *MutationError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("mutation of %s: %s: %v", e.Target, e.Field, e.Err)
	}
	return fmt.Sprintf("mutation of %s: %v", e.Target, e.Err)
}
func (e *MutationError) Unwrap() error { return e.Err }

// MaxObjectBytes bounds the object a mutation may produce, and the bytes a
// JSON Patch may copy or a CEL expression may return on the way there: the
// API server refuses a request body past 1.5 MiB (etcd's default request
// limit), so a larger result could never be stored, and building one would
// only spend the manager's memory.
const MaxObjectBytes = 3 << 19

// TooLargeError is a mutation that would produce, or copy on the way, more
// than MaxObjectBytes: the operation fails with reason MutationTooLarge.
type TooLargeError struct {
	// What grew too large: "the mutated object", "JSON Patch copies", ...
	What  string
	Bytes int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s would be %d bytes or more, over arbiter's limit of %d bytes (1.5 MiB, the API server's request limit)",
		e.What, e.Bytes, MaxObjectBytes)
}

// ErrPreconditionFailed marks a JSON Patch `test` operation that did not hold.
var ErrPreconditionFailed = errors.New("precondition failed")

// The CEL variables an expression sees.
const (
	objectVar = "object"
	paramsVar = "params"
)

// expressionCostLimit bounds one evaluation, as the API server bounds each
// admission policy expression, so a hostile expression cannot stall the
// manager.
const expressionCostLimit = celconfig.PerCallLimit

// celEnv is Kubernetes' CEL environment for stored expressions (its
// libraries, at the compatibility version of the Kubernetes release arbiter is
// built against) with MutatingAdmissionPolicy's JSONPatch type and arbiter's
// variables.
var celEnv = func() *cel.Env {
	envSet, err := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()).Extend(
		environment.VersionedOptions{
			IntroducedVersion: version.MajorMinor(1, 0),
			EnvOptions: []cel.EnvOption{
				cel.Variable(objectVar, cel.DynType),
				cel.Variable(paramsVar, cel.DynType),
				common.ResolverEnvOption(&mutation.DynamicTypeResolver{}),
				environment.UnversionedLib(library.JSONPatch),
			},
		})
	if err != nil {
		panic(fmt.Sprintf("arbiter's CEL environment is misconfigured: %v", err))
	}
	env, err := envSet.Env(environment.StoredExpressions)
	if err != nil {
		panic(fmt.Sprintf("arbiter's CEL environment is misconfigured: %v", err))
	}
	if env, err = boundGrowingFunctions(env); err != nil {
		panic(fmt.Sprintf("arbiter's CEL environment is misconfigured: %v", err))
	}
	return env
}()

var jsonPatchListType = cel.ListType(types.NewObjectType(mutation.JSONPatchTypeName))

// programs caches compiled expressions: a storm of operations carries the
// same few expressions, and compiling one costs far more than running it.
// The least recently used go first once programCacheSize are cached.
var programs = lru.New(programCacheSize)

const programCacheSize = 1024

func compileExpression(expr string) (cel.Program, error) {
	if prg, ok := programs.Get(expr); ok {
		return prg.(cel.Program), nil
	}
	ast, issues := celEnv.Compile(expr)
	if issues.Err() != nil {
		return nil, issues.Err()
	}
	if !ast.OutputType().IsExactType(jsonPatchListType) && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("must return a list of JSONPatch, not %s", ast.OutputType())
	}
	opts := append([]cel.ProgramOption{cel.CostLimit(expressionCostLimit), cel.InterruptCheckFrequency(100)}, boundedCostOptions...)
	prg, err := celEnv.Program(ast, opts...)
	if err != nil {
		return nil, err
	}
	programs.Add(expr, prg)
	return prg, nil
}

// Mutation is one target's compiled mutation.
type Mutation struct {
	target     string
	jsonPatch  jsonpatch.Patch
	mergePatch []byte
	program    cel.Program
}

// Compile checks a target's mutation and prepares it for Apply. Its errors
// are *MutationError and name the field at fault.
func Compile(t *arbiterv1alpha1.Target) (*Mutation, error) {
	m := &Mutation{target: t.Kind + "/" + t.Name}
	fail := func(field, format string, args ...any) (*Mutation, error) {
		return nil, &MutationError{Target: m.target, Field: field, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case len(t.JSONPatch) > 0:
		ops := make([]map[string]any, len(t.JSONPatch))
		for i, op := range t.JSONPatch {
			o := map[string]any{"op": string(op.Op), "path": op.Path}
			if op.From != "" {
				o["from"] = op.From
			}
			needsValue := op.Op == arbiterv1alpha1.JSONPatchOpAdd || op.Op == arbiterv1alpha1.JSONPatchOpReplace || op.Op == arbiterv1alpha1.JSONPatchOpTest
			switch {
			case needsValue && op.Value == nil:
				return fail(fmt.Sprintf("jsonPatch[%d].value", i), "required for %s", op.Op)
			case !needsValue && op.Value != nil:
				return fail(fmt.Sprintf("jsonPatch[%d].value", i), "not allowed for %s", op.Op)
			case op.Value != nil:
				o["value"] = json.RawMessage(op.Value.Raw)
			}
			ops[i] = o
		}
		raw, err := json.Marshal(ops)
		if err != nil {
			return fail("jsonPatch", "%v", err)
		}
		if m.jsonPatch, err = jsonpatch.DecodePatch(raw); err != nil {
			return fail("jsonPatch", "%v", err)
		}
	case t.MergePatch != nil:
		m.mergePatch = t.MergePatch.Raw
	case t.Expression != "":
		prg, err := compileExpression(t.Expression)
		if err != nil {
			return fail("expression", "%v", err)
		}
		m.program = prg
	default:
		return fail("", "one of jsonPatch, mergePatch or expression must be set")
	}
	return m, nil
}

// Apply returns the target document (JSON) with the mutation applied. params
// is the operation's spec.params (JSON, may be nil). It never changes the
// object's identity: apiVersion, kind, metadata.name, metadata.namespace and
// metadata.uid. Its work is bounded: the result, JSON Patch copies and the
// values a CEL expression returns are at most MaxObjectBytes (a
// *TooLargeError otherwise), CEL evaluation has the API server's cost limit
// and stops when ctx ends.
func (m *Mutation) Apply(ctx context.Context, object, params []byte) ([]byte, error) {
	out, err := m.apply(ctx, object, params)
	if err != nil {
		return nil, &MutationError{Target: m.target, Err: err}
	}
	if len(out) > MaxObjectBytes {
		return nil, &MutationError{Target: m.target, Err: &TooLargeError{What: "the mutated object", Bytes: int64(len(out))}}
	}
	// The result must be an object Kubernetes can decode (a merge patch can
	// carry a number no float holds, say).
	var decoded map[string]any
	if err := utiljson.Unmarshal(out, &decoded); err != nil {
		return nil, &MutationError{Target: m.target, Err: fmt.Errorf("result is not a JSON object Kubernetes can decode: %w", err)}
	}
	if err := sameIdentity(object, out); err != nil {
		return nil, &MutationError{Target: m.target, Err: err}
	}
	return out, nil
}

func (m *Mutation) apply(ctx context.Context, object, params []byte) ([]byte, error) {
	switch {
	case m.jsonPatch != nil:
		return applyJSONPatch(m.jsonPatch, object)
	case m.mergePatch != nil:
		// The result is at most the object and the patch together, both
		// bounded by what the API server stores.
		return jsonpatch.MergePatch(object, m.mergePatch)
	default:
		patch, err := m.evaluate(ctx, object, params)
		if err != nil {
			return nil, err
		}
		return applyJSONPatch(patch, object)
	}
}

func applyJSONPatch(patch jsonpatch.Patch, object []byte) ([]byte, error) {
	opts := jsonpatch.NewApplyOptions()
	opts.SupportNegativeIndices = false
	// Each copy doubles what it copies at most, so thirty copies of a path
	// into itself would ask for gigabytes: the copies are bounded together.
	opts.AccumulatedCopySizeLimit = MaxObjectBytes
	out, err := patch.ApplyWithOptions(object, opts)
	var tooMuch *jsonpatch.AccumulatedCopySizeError
	switch {
	case errors.Is(err, jsonpatch.ErrTestFailed):
		return nil, fmt.Errorf("%w: %w", ErrPreconditionFailed, err)
	case errors.As(err, &tooMuch):
		return nil, &TooLargeError{What: "the values JSON Patch copy operations copy", Bytes: MaxObjectBytes + 1}
	}
	return out, err
}

// evaluate runs the CEL expression and converts its JSONPatch list into an
// RFC 6902 patch, as the API server does for a MutatingAdmissionPolicy.
func (m *Mutation) evaluate(ctx context.Context, object, params []byte) (jsonpatch.Patch, error) {
	vars := map[string]any{objectVar: map[string]any{}, paramsVar: map[string]any{}}
	for name, raw := range map[string][]byte{objectVar: object, paramsVar: params} {
		if len(raw) == 0 {
			continue
		}
		var v map[string]any
		// Kubernetes' JSON decoding keeps integers int64, so CEL integer
		// arithmetic on fields such as spec.balance works.
		if err := utiljson.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", name, err)
		}
		vars[name] = v
	}
	val, _, err := m.program.ContextEval(ctx, vars)
	if err != nil {
		return nil, fmt.Errorf("expression: %w", err)
	}
	list, ok := val.(traits.Lister)
	if !ok {
		return nil, fmt.Errorf("expression: returned %s, not a list of JSONPatch", val.Type())
	}
	var patch jsonpatch.Patch
	// What the expression returns is bounded as a whole: one expression may
	// return the same large field, or the same long path, in thousands of
	// operations. Each part is measured before it is copied: a list of many
	// references to one string costs little to build in CEL and everything
	// to write out.
	var returned int64
	tooLarge := func(add int64) bool {
		returned += add
		return returned > MaxObjectBytes
	}
	for it := list.Iterator(); it.HasNext() == types.True; {
		native, err := it.Next().ConvertToNative(reflect.TypeFor[*mutation.JSONPatchVal]())
		if err != nil {
			return nil, fmt.Errorf("expression: returned a list element that is not a JSONPatch: %w", err)
		}
		p := native.(*mutation.JSONPatchVal)
		var valueAtLeast int64
		if p.Val != nil {
			valueAtLeast = celSize(p.Val, MaxObjectBytes-returned)
		}
		if tooLarge(int64(len(p.Op)+len(p.Path)+len(p.From)) + valueAtLeast) {
			return nil, &TooLargeError{What: "the JSON Patch the expression returns", Bytes: returned}
		}
		op := jsonpatch.Operation{
			"op":   rawJSON(strconv.Quote(p.Op)),
			"path": rawJSON(strconv.Quote(p.Path)),
		}
		if p.From != "" {
			op["from"] = rawJSON(strconv.Quote(p.From))
		}
		if p.Val != nil {
			if obj, ok := p.Val.(*dynamic.ObjectVal); ok {
				if err := obj.CheckTypeNamesMatchFieldPathNames(); err != nil {
					return nil, fmt.Errorf("expression: type mismatch: %w", err)
				}
			}
			pb, err := p.Val.ConvertToNative(reflect.TypeFor[*structpb.Value]())
			if err != nil {
				return nil, fmt.Errorf("expression: value of %s at %s is not JSON: %w", p.Op, p.Path, err)
			}
			b, err := json.Marshal(pb)
			if err != nil {
				return nil, fmt.Errorf("expression: value of %s at %s is not JSON: %w", p.Op, p.Path, err)
			}
			// The value's exact size, in place of its lower bound.
			if tooLarge(int64(len(b)) - valueAtLeast) {
				return nil, &TooLargeError{What: "the JSON Patch the expression returns", Bytes: returned}
			}
			op["value"] = rawJSON(string(b))
		}
		patch = append(patch, op)
	}
	return patch, nil
}

func rawJSON(s string) *json.RawMessage {
	r := json.RawMessage(s)
	return &r
}

// sameIdentity refuses a result that renames, moves or retypes the object.
func sameIdentity(before, after []byte) error {
	type identity struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			UID       string `json:"uid"`
		} `json:"metadata"`
	}
	var b, a identity
	if err := json.Unmarshal(before, &b); err != nil {
		return fmt.Errorf("decoding target: %w", err)
	}
	if err := json.Unmarshal(after, &a); err != nil {
		return fmt.Errorf("result is not a JSON object: %w", err)
	}
	if a != b {
		return errors.New("must not change apiVersion, kind, metadata.name, metadata.namespace or metadata.uid")
	}
	return nil
}
