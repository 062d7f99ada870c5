package execute

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// Failure ends an operation: the reason is one of the API's reasons, the
// message a sentence for status and events.
type Failure struct {
	Reason  string
	Message string
}

func (f *Failure) Error() string { return f.Reason + ": " + f.Message }

func failure(reason, format string, args ...any) *Failure {
	return &Failure{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Backoff is the retry policy after a 409 Conflict: delay n is
// Base * Factor^n with ±20% jitter, capped at Max.
type Backoff struct {
	MaxRetries int
	Base       time.Duration
	Factor     float64
	Max        time.Duration
}

// BackoffFor reads an operation's spec.occ, defaults applied by the API server.
func BackoffFor(occ arbiterv1alpha1.OCCSpec) Backoff {
	b := Backoff{MaxRetries: 10, Base: 5 * time.Millisecond, Factor: 1.5, Max: time.Second}
	if occ.MaxRetries != nil {
		b.MaxRetries = int(*occ.MaxRetries)
	}
	if occ.BaseDelay != nil {
		b.Base = occ.BaseDelay.Duration
	}
	if f, err := strconv.ParseFloat(occ.BackoffFactor, 64); err == nil && f >= 1 {
		b.Factor = f
	}
	if occ.MaxDelay != nil {
		b.Max = occ.MaxDelay.Duration
	}
	return b
}

// Delay is the wait before retry n (0-based).
func (b Backoff) Delay(n int) time.Duration {
	d := float64(b.Base) * math.Pow(b.Factor, float64(n))
	d *= 0.8 + 0.4*rand.Float64() //nolint:gosec // jitter, not security
	// Capped as a float: past about 70 retries the product overflows a
	// Duration.
	return time.Duration(min(d, float64(b.Max)))
}

// Request is one execution of an operation.
type Request struct {
	// UID of the operation, recorded on each target it is applied to.
	UID       string
	Namespace string
	Targets   []arbiterv1alpha1.Target
	Params    []byte
	Backoff   Backoff
	// Stop is asked before every write; a non-nil Failure (preempted,
	// timed out) stops the execution, which rolls back what it wrote.
	Stop func() *Failure
	// OnConflict is called for every 409 Conflict met.
	OnConflict func()
}

// TargetResult is what happened on one target.
type TargetResult struct {
	ResourceVersionBefore string
	ResourceVersionAfter  string
	Applied               bool
	// Recovered is true when the target already recorded the operation (a
	// restart between the target write and the status write).
	Recovered bool

	key     client.ObjectKey
	gvk     schema.GroupVersionKind
	changes []change
}

// Result is the outcome of an execution. Failure is nil on success.
type Result struct {
	Targets  []TargetResult
	Attempts int32
	Failure  *Failure
}

// Executor applies operations to their targets with optimistic concurrency.
type Executor struct {
	// Reader reads targets fresh from the API server, never from a cache.
	Reader client.Reader
	// Writer updates targets.
	Writer client.Client
}

// Execute applies every target's mutation in order. Each target is read
// fresh, mutated, and updated with the resourceVersion read; a 409 Conflict
// starts again from the read, after a backoff, up to Backoff.MaxRetries.
// When a target fails, those already written are rolled back. A returned
// error is transient (the API server could not be reached): executing again
// is safe, as targets that record the operation are not written twice.
func (e *Executor) Execute(ctx context.Context, req Request) (Result, error) {
	var res Result
	// The webhook refuses such params; this holds when it is not installed.
	if err := CheckParams(req.Params); err != nil {
		res.Failure = failure(arbiterv1alpha1.ReasonInvalidMutation, "spec.params %v", err)
		return res, nil
	}
	mutations := make([]*Mutation, len(req.Targets))
	for i := range req.Targets {
		m, err := Compile(&req.Targets[i])
		if err != nil {
			res.Failure = failure(arbiterv1alpha1.ReasonInvalidMutation, "%v", err)
			return res, nil
		}
		mutations[i] = m
	}
	for i := range req.Targets {
		tr, f, err := e.applyTarget(ctx, req, &req.Targets[i], mutations[i], &res)
		if err == nil && f == nil {
			res.Targets = append(res.Targets, tr)
			continue
		}
		if err != nil {
			// Transient: the write may even have landed. Executing again
			// finds the targets that record the operation and goes on.
			return res, err
		}
		res.Failure = e.rollBack(ctx, req, &res, f)
		return res, nil
	}
	return res, nil
}

func (e *Executor) applyTarget(ctx context.Context, req Request, t *arbiterv1alpha1.Target, m *Mutation, res *Result) (TargetResult, *Failure, error) {
	gv, err := schema.ParseGroupVersion(t.APIVersion)
	if err != nil {
		return TargetResult{}, failure(arbiterv1alpha1.ReasonInvalidMutation, "Target apiVersion %q: %v", t.APIVersion, err), nil
	}
	tr := TargetResult{key: client.ObjectKey{Namespace: req.Namespace, Name: t.Name}, gvk: gv.WithKind(t.Kind)}
	name := fmt.Sprintf("%s %s/%s", t.Kind, req.Namespace, t.Name)
	for attempt := 0; ; attempt++ {
		if f := req.Stop(); f != nil {
			return tr, f, nil
		}
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(tr.gvk)
		if err := e.Reader.Get(ctx, tr.key, obj); err != nil {
			if f := classify(err, name, "read"); f != nil {
				return tr, f, nil
			}
			return tr, nil, fmt.Errorf("reading %s: %w", name, err)
		}
		tr.ResourceVersionBefore = obj.GetResourceVersion()
		if WasApplied(obj, req.UID) {
			tr.ResourceVersionAfter, tr.Applied, tr.Recovered = obj.GetResourceVersion(), true, true
			return tr, nil, nil
		}
		before, err := obj.MarshalJSON()
		if err != nil {
			return tr, nil, fmt.Errorf("encoding %s: %w", name, err)
		}
		after, err := m.Apply(before, req.Params)
		if err != nil {
			return tr, failure(arbiterv1alpha1.ReasonInvalidMutation, "%v", err), nil
		}
		updated := &unstructured.Unstructured{}
		if err := utiljson.Unmarshal(after, &updated.Object); err != nil {
			return tr, failure(arbiterv1alpha1.ReasonInvalidMutation, "%s: result is not an object: %v", name, err), nil
		}
		if updated.GetAnnotations()[arbiterv1alpha1.AppliedAnnotation] != obj.GetAnnotations()[arbiterv1alpha1.AppliedAnnotation] {
			return tr, failure(arbiterv1alpha1.ReasonInvalidMutation, "%s: a mutation must not change the %s annotation",
				name, arbiterv1alpha1.AppliedAnnotation), nil
		}
		// The write is conditional on what was read, whatever the mutation did.
		updated.SetResourceVersion(obj.GetResourceVersion())
		// What the operation itself wrote, for a rollback: the record is
		// arbiter's bookkeeping, added after.
		changes := diff(obj.Object, updated.Object)
		recordApplied(updated, req.UID)

		if f := req.Stop(); f != nil {
			return tr, f, nil
		}
		res.Attempts++
		err = e.Writer.Update(ctx, updated)
		if err == nil {
			tr.ResourceVersionAfter, tr.Applied, tr.changes = updated.GetResourceVersion(), true, changes
			return tr, nil, nil
		}
		if !apierrors.IsConflict(err) {
			if f := classify(err, name, "update"); f != nil {
				return tr, f, nil
			}
			return tr, nil, fmt.Errorf("updating %s: %w", name, err)
		}
		if req.OnConflict != nil {
			req.OnConflict()
		}
		if attempt >= req.Backoff.MaxRetries {
			return tr, failure(arbiterv1alpha1.ReasonConflictRetriesExhausted,
				"%s changed under every one of %d attempts (maxRetries %d); nothing was written", name, attempt+1, req.Backoff.MaxRetries), nil
		}
		if err := sleep(ctx, req.Backoff.Delay(attempt)); err != nil {
			return tr, nil, err
		}
	}
}

// classify turns a permanent API error into a Failure; nil means transient.
func classify(err error, name, verb string) *Failure {
	switch {
	case apierrors.IsNotFound(err):
		return failure(arbiterv1alpha1.ReasonTargetNotFound, "%s not found", name)
	case meta.IsNoMatchError(err):
		return failure(arbiterv1alpha1.ReasonTargetNotFound, "%s: the kind is not served by the API server", name)
	case apierrors.IsForbidden(err):
		return failure(arbiterv1alpha1.ReasonForbidden, "arbiter may not %s %s: %v", verb, name, apierrors.ReasonForError(err))
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return failure(arbiterv1alpha1.ReasonInvalidMutation, "The API server refused the mutated %s: %v", name, err)
	case apierrors.IsRequestEntityTooLargeError(err):
		return failure(arbiterv1alpha1.ReasonInvalidMutation, "The mutated %s is larger than the API server stores: %v", name, err)
	}
	return nil
}

// rollBack restores the targets written so far, newest first, and returns
// the failure that ends the operation.
func (e *Executor) rollBack(ctx context.Context, req Request, res *Result, cause *Failure) *Failure {
	written := 0
	for _, tr := range res.Targets {
		if tr.Applied {
			written++
		}
	}
	if written == 0 {
		return cause
	}
	var restored, stuck []string
	for i := len(res.Targets) - 1; i >= 0; i-- {
		tr := &res.Targets[i]
		name := fmt.Sprintf("%s %s/%s", tr.gvk.Kind, tr.key.Namespace, tr.key.Name)
		if err := e.restore(ctx, req, tr); err != nil {
			stuck = append(stuck, fmt.Sprintf("%s (%v)", name, err))
			continue
		}
		tr.Applied = false
		restored = append(restored, name)
	}
	reason := arbiterv1alpha1.ReasonRolledBack
	switch cause.Reason {
	case arbiterv1alpha1.ReasonPreempted, arbiterv1alpha1.ReasonTimeout:
		reason = cause.Reason
	}
	msg := cause.Message
	if len(restored) > 0 {
		msg += "; rolled back " + strings.Join(restored, ", ")
	}
	if len(stuck) > 0 {
		return failure(arbiterv1alpha1.ReasonRollbackFailed,
			"%s; could not restore %s: a human must check them", msg, strings.Join(stuck, ", "))
	}
	return failure(reason, "%s", msg)
}

// restore reverts the paths one target was written at, under the same
// optimistic concurrency as the write, and only while they still hold what
// the operation wrote.
func (e *Executor) restore(ctx context.Context, req Request, tr *TargetResult) error {
	if tr.Recovered {
		return errors.New("applied before a manager restart; what it changed is unknown")
	}
	for attempt := 0; ; attempt++ {
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(tr.gvk)
		if err := e.Reader.Get(ctx, tr.key, obj); err != nil {
			return err
		}
		if changed := revert(obj.Object, tr.changes); len(changed) > 0 {
			return fmt.Errorf("%v changed since the operation wrote %s", changed, describe(tr.changes))
		}
		forgetApplied(obj, req.UID)
		err := e.Writer.Update(ctx, obj)
		if err == nil || !apierrors.IsConflict(err) {
			return err
		}
		if req.OnConflict != nil {
			req.OnConflict()
		}
		if attempt >= req.Backoff.MaxRetries {
			return fmt.Errorf("changed under every one of %d attempts", attempt+1)
		}
		if err := sleep(ctx, req.Backoff.Delay(attempt)); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
