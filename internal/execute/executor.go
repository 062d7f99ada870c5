package execute

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
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
// Base * Factor^n, plus up to 20% jitter, capped at Max.
type Backoff struct {
	MaxRetries int
	Base       time.Duration
	Factor     float64
	Max        time.Duration
}

// BackoffFor reads an operation's spec.occ, defaults applied by the API server.
func BackoffFor(occ arbiterv1alpha1.OCCSpec) Backoff {
	return Backoff{MaxRetries: occ.MaxRetriesOrDefault(), Base: occ.BaseDelayOrDefault(),
		Factor: occ.BackoffFactorOrDefault(), Max: occ.MaxDelayOrDefault()}
}

// delays is the sequence of waits between retries: each Step is the next.
func (b Backoff) delays() wait.Backoff {
	return wait.Backoff{Duration: b.Base, Factor: b.Factor, Jitter: 0.2, Steps: math.MaxInt32, Cap: b.Max}
}

// Request is one execution of an operation.
type Request struct {
	// UID of the operation, recorded on each target it is applied to.
	UID       string
	Namespace string
	Targets   []arbiterv1alpha1.Target
	Params    []byte
	Backoff   Backoff
	// Stop is asked before every write, once what already landed is known;
	// a non-nil Failure (preempted, timed out, deleted, forbidden) stops the
	// execution, which rolls back what it wrote. An error (the question
	// went unanswered) holds the write back: Execute returns it, and the
	// next call asks again.
	Stop func() (*Failure, error)
	// OnConflict is called for every 409 Conflict met.
	OnConflict func()
}

// TargetResult is what happened on one target.
type TargetResult struct {
	ResourceVersionBefore string
	ResourceVersionAfter  string
	Applied               bool
	// Recovered is true when the target already recorded the operation and
	// this execution does not know what it wrote (a new manager after a
	// restart or a failover).
	Recovered bool

	key     client.ObjectKey
	gvk     schema.GroupVersionKind
	changes []change
	// restored is set once the target is restored; restoreSent while a
	// restore's answer was lost (it may have landed); unconfirmed for a
	// write whose answer was lost, sent at sentAt, to restore only if it
	// landed.
	restored, restoreSent, unconfirmed bool
	sentAt                             time.Time
	// mayLandLate is set for an unconfirmed write whose error says nothing
	// of the write's fate (see mayBeStoredLater).
	mayLandLate bool
}

// canStillLand tells whether a write whose answer was lost, not seen on a
// target read at resourceVersion rv at now, may still land: only a write
// whose answer said nothing of it, conditional on that very version, and
// within the API server's request timeout.
func (tr *TargetResult) canStillLand(rv string, now time.Time) bool {
	return tr.mayLandLate && rv == tr.ResourceVersionBefore && now.Before(tr.sentAt.Add(lostWriteLandsWithin))
}

// Progress is one execution carried from call to call of Execute: the
// targets written so far, with what each write changed, and the conflicts
// met on the target being written. The caller keeps it while the operation
// executes, so a call after a backoff, a transient error or a failed status
// write goes on where the last one stopped. Without it (a new manager), the
// targets' arbiter.dev/applied record tells what landed.
type Progress struct {
	// StartedHere says this manager began the execution (it recorded the
	// operation Executing before any write): then a target's record of the
	// operation that this execution did not write is no write of the
	// operation's. Anyone who may update a target can add the record; it is
	// trusted as a landed write only when the execution may have begun in a
	// manager before this one.
	StartedHere bool
	Targets     []TargetResult
	// Attempts counts the target writes made, conflicts included.
	Attempts int32
	// Conflicts counts the 409s met on the target being written.
	Conflicts int
	// RetryAt is when the target being written may be tried again.
	RetryAt time.Time
	// delays paces the retries of the target being written.
	delays *wait.Backoff
	// mutations are the targets' mutations, compiled at the first call.
	mutations []*Mutation
	// sent is what the last write of the target being written changed,
	// when its answer was lost (a transient error): it may land late, after
	// reads that do not show it yet, so it is kept until the target is
	// written or found written. If it landed, the next call knows it for
	// this execution's and what to roll back.
	sent *TargetResult
	// final is the outcome once there is one: a call after it (its status
	// write failed) returns it again and never goes on past a rollback.
	final *Result
	// rollingBack is the failure whose rollback a transient error
	// interrupted: the next call goes on restoring, never writing; it has
	// since the first such error (interruptedAt) rollbackRetryWindow to
	// finish, whatever the caller's deadline.
	rollingBack   *Failure
	interruptedAt time.Time
}

// mayBeStoredLater tells whether a write that met err may still be stored
// after the error came back: its answer was lost on the way (no API status at
// all), or the API server gave up waiting for storage (a timeout) or for
// the client's own retries (a 429 may answer a retry of a write that timed
// out). Any other status is the API server's answer to a write it did not
// store, or stored before it answered: the next read shows which.
func mayBeStoredLater(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true
	}
	return apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsUnexpectedServerError(err)
}

// lostWriteLandsWithin is how long after it was sent a write whose answer
// was lost may still land: the API server's default request timeout, and
// a margin. Past it, a write not seen did not land.
const lostWriteLandsWithin = 70 * time.Second

// rollbackRetryWindow bounds how long a rollback goes on through transient
// errors (the API server restarting or overloaded). Past it, the targets
// not yet restored are left for a human, as a restore that cannot be
// written: an error that lasts (a broken conversion webhook on the
// target's kind, say) must not hold the operation and its targets forever.
const rollbackRetryWindow = time.Minute

// Result is the outcome of one call of Execute. Failure is nil on success
// and while the execution backs off.
type Result struct {
	Targets  []TargetResult
	Attempts int32
	Failure  *Failure
	// RetryAt, when set, asks for Execute to be called again at that time
	// with the same Progress: a write met a 409 Conflict and backs off.
	// Nothing waits in the meantime.
	RetryAt time.Time
}

// Done reports whether the execution ended, applied or failed.
func (r Result) Done() bool { return r.RetryAt.IsZero() }

// Executor applies operations to their targets with optimistic concurrency.
type Executor struct {
	// Reader reads targets fresh from the API server, never from a cache.
	Reader client.Reader
	// Writer updates targets.
	Writer client.Client
	// Clock tells the backoff's time; the real clock when nil.
	Clock clock.PassiveClock
}

func (e *Executor) now() time.Time {
	if e.Clock == nil {
		return time.Now()
	}
	return e.Clock.Now()
}

// Execute applies every target's mutation in order, going on from p. Each
// target is read fresh, mutated, and updated with the resourceVersion read.
// A 409 Conflict returns at once with Result.RetryAt set (after
// Backoff.Delay): the caller calls again then, and the target is read
// afresh, up to Backoff.MaxRetries. When a target fails, or Stop says so
// before a write, those already written are rolled back. A returned error
// is transient (the API server could not be reached): calling again is
// safe, as targets that record the operation are never written twice.
func (e *Executor) Execute(ctx context.Context, req Request, p *Progress) (Result, error) {
	if p.final != nil {
		return *p.final, nil
	}
	res, err := e.execute(ctx, req, p)
	if err == nil && res.Done() {
		p.final = &res
	}
	return res, err
}

func (e *Executor) execute(ctx context.Context, req Request, p *Progress) (Result, error) {
	result := func(f *Failure) Result {
		return Result{Targets: p.Targets, Attempts: p.Attempts, Failure: f}
	}
	backingOff := func() Result {
		return Result{Targets: p.Targets, Attempts: p.Attempts, RetryAt: p.RetryAt}
	}
	// Checked and compiled once an execution (spec is immutable): a call
	// during a backoff, which any edit of the operation brings, must not
	// scan 256 KiB of params again.
	if p.mutations == nil {
		// The webhook refuses such params; this holds when it is not installed.
		if err := CheckParams(req.Params); err != nil {
			return result(failure(arbiterv1alpha1.ReasonInvalidMutation, "spec.params %v", err)), nil
		}
		mutations := make([]*Mutation, len(req.Targets))
		for i := range req.Targets {
			m, err := Compile(&req.Targets[i])
			if err != nil {
				return result(failure(arbiterv1alpha1.ReasonInvalidMutation, "%v", err)), nil
			}
			mutations[i] = m
		}
		p.mutations = mutations
	}
	mutations := p.mutations
	rollBack := func(cause *Failure) (Result, error) {
		f, err := e.rollBack(ctx, req, p, cause)
		if err != nil {
			return result(nil), err
		}
		return result(f), nil
	}
	if p.rollingBack != nil {
		return rollBack(p.rollingBack)
	}
	if now := e.now(); now.Before(p.RetryAt) {
		// Called before the backoff ends (preempted, deleted or timed out,
		// or an event about the operation): the last write met a 409, so
		// nothing of the current target landed but perhaps a write whose
		// answer was lost before it (p.sent), which the rollback looks for.
		// A Stop left unanswered writes nothing here: the write asks again.
		if f, _ := req.Stop(); f != nil {
			return rollBack(f)
		}
		return backingOff(), nil
	}
	for i := len(p.Targets); i < len(req.Targets); i++ {
		tr, f, err := e.attempt(ctx, req, &req.Targets[i], mutations[i], p)
		switch {
		case err != nil:
			// Transient: the write may even have landed. Executing again
			// reads the target's record first.
			return result(nil), err
		case f != nil:
			return rollBack(f)
		case !tr.Applied:
			if p.delays == nil {
				d := req.Backoff.delays()
				p.delays = &d
			}
			p.RetryAt = e.now().Add(p.delays.Step())
			return backingOff(), nil
		}
		p.Targets = append(p.Targets, tr)
		p.Conflicts, p.RetryAt, p.delays = 0, time.Time{}, nil
	}
	return result(nil), nil
}

// attempt makes one read-mutate-write of a target. It returns the target
// applied, a Failure that ends the operation, or neither after a 409 (to
// retry after the backoff).
func (e *Executor) attempt(ctx context.Context, req Request, t *arbiterv1alpha1.Target, m *Mutation, p *Progress) (TargetResult, *Failure, error) {
	gv, err := schema.ParseGroupVersion(t.APIVersion)
	if err != nil {
		return TargetResult{}, failure(arbiterv1alpha1.ReasonInvalidMutation, "Target apiVersion %q: %v", t.APIVersion, err), nil
	}
	tr := TargetResult{key: client.ObjectKey{Namespace: req.Namespace, Name: t.Name}, gvk: gv.WithKind(t.Kind)}
	name := fmt.Sprintf("%s %s/%s", t.Kind, req.Namespace, t.Name)
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(tr.gvk)
	if err := e.Reader.Get(ctx, tr.key, obj); err != nil {
		if f := classify(err, name, "read"); f != nil {
			return tr, f, nil
		}
		// A target that stays unreadable (its aggregated API or conversion
		// webhook down) must not hold the operation past its deadline, a
		// preemption or a deletion: the rollback then finds out what landed.
		if f, _ := req.Stop(); f != nil {
			return tr, f, nil
		}
		return tr, nil, fmt.Errorf("reading %s: %w", name, err)
	}
	tr.ResourceVersionBefore = obj.GetResourceVersion()
	sent := p.sent
	ours := sent != nil && sent.key == tr.key && sent.gvk == tr.gvk
	// What landed is found out before anything may stop the execution: an
	// operation whose write landed is applied, whatever happens next.
	if WasApplied(obj, req.UID) {
		switch {
		case ours:
			// Our own write, whose answer was lost: what it changed is known.
			tr.ResourceVersionBefore, tr.ResourceVersionAfter, tr.Applied, tr.changes, p.sent =
				sent.ResourceVersionBefore, obj.GetResourceVersion(), true, sent.changes, nil
			return tr, nil, nil
		case !p.StartedHere:
			// Written by the manager before this one.
			tr.ResourceVersionAfter, tr.Applied, tr.Recovered = obj.GetResourceVersion(), true, true
			return tr, nil, nil
		}
		// Not this execution's record: someone else wrote it. The target
		// is written, and the record then holds the operation once.
	} else if ours && !sent.canStillLand(tr.ResourceVersionBefore, e.now()) {
		// The write did not land and never will: the API server answered
		// it, it was conditional on a version that is gone, or the API
		// server has given up on it.
		p.sent = nil
	}
	if f, err := req.Stop(); f != nil || err != nil {
		if err != nil {
			err = fmt.Errorf("asking whether %s may be written: %w", name, err)
		}
		return tr, f, err
	}
	before, err := obj.MarshalJSON()
	if err != nil {
		return tr, nil, fmt.Errorf("encoding %s: %w", name, err)
	}
	after, err := m.Apply(ctx, before, req.Params)
	if err != nil {
		if tooLarge := (*TooLargeError)(nil); errors.As(err, &tooLarge) {
			return tr, failure(arbiterv1alpha1.ReasonMutationTooLarge, "%v", err), nil
		}
		if ctx.Err() != nil {
			return tr, nil, fmt.Errorf("mutating %s: %w", name, ctx.Err())
		}
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

	p.Attempts++
	err = e.Writer.Update(ctx, updated)
	switch {
	case err == nil:
		tr.ResourceVersionAfter, tr.Applied, tr.changes, p.sent = updated.GetResourceVersion(), true, changes, nil
		return tr, nil, nil
	case !apierrors.IsConflict(err):
		if f := classify(err, name, "update"); f != nil {
			return tr, f, nil
		}
		// No answer: the write may have landed, or land later (a 429 too:
		// the client retries a write on its own, and the answer seen may
		// be a retry's). If it does, the next call knows from this that it
		// is this execution's, and what to roll back.
		p.sent = &TargetResult{key: tr.key, gvk: tr.gvk, changes: changes, ResourceVersionBefore: tr.ResourceVersionBefore, sentAt: e.now(),
			mayLandLate: mayBeStoredLater(err)}
		return tr, nil, fmt.Errorf("updating %s: %w", name, err)
	}
	if req.OnConflict != nil {
		req.OnConflict()
	}
	if p.sent != nil {
		// Perhaps our own lost write that landed: the next read tells, and
		// only then does the conflict count.
		return tr, nil, nil
	}
	if p.Conflicts++; p.Conflicts > req.Backoff.MaxRetries {
		return tr, failure(arbiterv1alpha1.ReasonConflictRetriesExhausted,
			"%s changed under every one of %d attempts (maxRetries %d); nothing was written", name, p.Conflicts, req.Backoff.MaxRetries), nil
	}
	return tr, nil, nil
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
// the failure that ends the operation. A transient error (the API server
// unreachable or overloaded, the manager stopping) interrupts it and is
// returned: the next call with p goes on with the targets not yet
// restored, rather than leave them written.
func (e *Executor) rollBack(ctx context.Context, req Request, p *Progress, cause *Failure) (*Failure, error) {
	if p.sent != nil {
		// A write whose answer was lost may have landed: restored if so.
		tr := *p.sent
		tr.Applied, tr.unconfirmed, p.sent = true, true, nil
		p.Targets = append(p.Targets, tr)
	}
	written := 0
	for _, tr := range p.Targets {
		if tr.Applied || tr.restored {
			written++
		}
	}
	if written == 0 {
		return cause, nil
	}
	var restored, stuck []string
	for i := len(p.Targets) - 1; i >= 0; i-- {
		tr := &p.Targets[i]
		name := fmt.Sprintf("%s %s/%s", tr.gvk.Kind, tr.key.Namespace, tr.key.Name)
		if tr.restored {
			restored = append(restored, name)
			continue
		}
		err := e.restore(ctx, req, tr)
		switch {
		case errors.Is(err, errNotLanded):
			p.Targets = slices.Delete(p.Targets, i, i+1)
			continue
		case errors.Is(err, errMayStillLand):
			// A wait bounded by lostWriteLandsWithin, not an API error: the
			// window the other targets have for transient errors is theirs.
			p.rollingBack = cause
			return nil, fmt.Errorf("restoring %s: %w", name, err)
		}
		if err != nil {
			if transient := (*transientError)(nil); errors.As(err, &transient) {
				if p.interruptedAt.IsZero() {
					p.interruptedAt = e.now()
				}
				if e.now().Sub(p.interruptedAt) < rollbackRetryWindow {
					p.rollingBack = cause
					return nil, fmt.Errorf("restoring %s: %w", name, transient.err)
				}
			}
			stuck = append(stuck, fmt.Sprintf("%s (%v)", name, err))
			continue
		}
		tr.Applied, tr.restored = false, true
		restored = append(restored, name)
	}
	p.rollingBack = nil
	if len(restored) == 0 && len(stuck) == 0 {
		return cause, nil // the one write there was did not land
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
			"%s; could not restore %s: a human must check them", msg, strings.Join(stuck, ", ")), nil
	}
	return failure(reason, "%s", msg), nil
}

// errNotLanded is a write whose answer was lost and that did not land:
// nothing to restore. errMayStillLand is one not seen yet that may land.
var (
	errNotLanded    = errors.New("the write did not land")
	errMayStillLand = errors.New("a write whose answer was lost may still land")
)

// transientError is a restore's error that says nothing about the target:
// restoring it again later is safe and may succeed.
type transientError struct{ err error }

func (t *transientError) Error() string { return t.err.Error() }

// restoreError sorts an API error met while restoring name: a permanent
// one (gone, forbidden, refused) leaves the target for a human, any other
// is transient.
func restoreError(err error, name, verb string) error {
	if f := classify(err, name, verb); f != nil {
		return err
	}
	return &transientError{err}
}

// rollbackBackoff paces a restore's retries after a 409. It is arbiter's,
// not the operation's: a restore is short, rare (the target is held while
// the operation executes) and must not wait on a user's long delays.
var rollbackBackoff = Backoff{MaxRetries: 5, Base: 5 * time.Millisecond, Factor: 2, Max: 100 * time.Millisecond}

// restore reverts the paths one target was written at, under the same
// optimistic concurrency as the write, and only while they still hold what
// the operation wrote.
func (e *Executor) restore(ctx context.Context, req Request, tr *TargetResult) error {
	if tr.Recovered {
		return errors.New("applied before a manager restart; what it changed is unknown")
	}
	name := fmt.Sprintf("%s %s/%s", tr.gvk.Kind, tr.key.Namespace, tr.key.Name)
	delays := rollbackBackoff.delays()
	for attempt := 0; ; attempt++ {
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(tr.gvk)
		if err := e.Reader.Get(ctx, tr.key, obj); err != nil {
			if tr.unconfirmed && apierrors.IsNotFound(err) {
				return errNotLanded // gone, whatever landed
			}
			return restoreError(err, name, "read")
		}
		if tr.unconfirmed && !tr.restoreSent && !WasApplied(obj, req.UID) {
			if tr.canStillLand(obj.GetResourceVersion(), e.now()) {
				return errMayStillLand // not yet: look again
			}
			return errNotLanded
		}
		if tr.restoreSent && !WasApplied(obj, req.UID) && holdsBefore(obj.Object, tr.changes) {
			// The restore whose answer was lost landed: the record is gone
			// and what the operation wrote is undone.
			return nil
		}
		if changed := revert(obj.Object, tr.changes); len(changed) > 0 {
			return fmt.Errorf("%v changed since the operation wrote %s", changed, describe(tr.changes))
		}
		forgetApplied(obj, req.UID)
		err := e.Writer.Update(ctx, obj)
		switch {
		case err == nil:
			return nil
		case !apierrors.IsConflict(err):
			err = restoreError(err, name, "update")
			// No answer: the restore may have landed, and the next one
			// then finds the record gone.
			tr.restoreSent = errors.As(err, new(*transientError))
			return err
		}
		if req.OnConflict != nil {
			req.OnConflict()
		}
		if attempt >= rollbackBackoff.MaxRetries {
			return fmt.Errorf("changed under every one of %d attempts", attempt+1)
		}
		if err := sleep(ctx, delays.Step()); err != nil {
			return &transientError{err}
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
