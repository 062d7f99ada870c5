package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/cleanup"
)

// logRecord is one line a recordingSink saw, its values rendered as JSON
// renders them (as zap writes them to the manager's log).
type logRecord struct {
	Logger string
	Level  int
	Msg    string
	Values map[string]any
}

// logRecords collects the lines of one logger name, for every sink derived
// from one recordingSink.
type logRecords struct {
	name string
	mu   sync.Mutex
	list []logRecord
}

func (l *logRecords) all() []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logRecord(nil), l.list...)
}

// recordingSink records the lines of the logger named records.name and
// hands every line to next, if any.
type recordingSink struct {
	records *logRecords
	next    logr.LogSink
	name    string
	values  []any
}

func newRecordingSink(name string, next logr.LogSink) (*recordingSink, *logRecords) {
	l := &logRecords{name: name}
	return &recordingSink{records: l, next: next}, l
}

func (s *recordingSink) Init(info logr.RuntimeInfo) {
	if s.next != nil {
		s.next.Init(info)
	}
}

func (s *recordingSink) Enabled(level int) bool {
	return level == 0 || s.next != nil && s.next.Enabled(level)
}

func (s *recordingSink) Info(level int, msg string, kv ...any) {
	if s.next != nil && s.next.Enabled(level) {
		s.next.Info(level, msg, kv...)
	}
	if s.name != s.records.name {
		return
	}
	values := map[string]any{}
	all := append(append([]any(nil), s.values...), kv...)
	for i := 0; i+1 < len(all); i += 2 {
		raw, err := json.Marshal(all[i+1])
		if err != nil {
			panic(err)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			panic(err)
		}
		values[all[i].(string)] = v
	}
	s.records.mu.Lock()
	defer s.records.mu.Unlock()
	s.records.list = append(s.records.list, logRecord{Logger: s.name, Level: level, Msg: msg, Values: values})
}

func (s *recordingSink) Error(err error, msg string, kv ...any) {
	if s.next != nil {
		s.next.Error(err, msg, kv...)
	}
}

func (s *recordingSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.values = append(append([]any(nil), s.values...), kv...)
	if s.next != nil {
		c.next = s.next.WithValues(kv...)
	}
	return &c
}

func (s *recordingSink) WithName(name string) logr.LogSink {
	c := *s
	c.name = strings.Trim(s.name+"."+name, ".")
	if s.next != nil {
		c.next = s.next.WithName(name)
	}
	return &c
}

// auditKeys are the keys of every audit record, removal or dry run.
var auditKeys = []string{"operation", "uid", "function", "requester", "phase", "reason", "winner", "priority",
	"effectivePriority", "createdAt", "completedAt", "removedAt", "targets", "policy", "strategy", "why", "dryRun"}

func keysOf(m map[string]any) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// auditedZombie is a zombie with every field an audit record names.
func auditedZombie(ns, name string) *arbiterv1alpha1.ConflictResolutionOperation {
	op := rejected(ns, name)
	op.CreationTimestamp = metav1.NewTime(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	done := metav1.NewMicroTime(time.Date(2026, 11, 29, 10, 0, 1, 500000000, time.UTC))
	op.Status.CompletedAt = &done
	op.Status.Reason = arbiterv1alpha1.ReasonLostStaging
	op.Status.Winner = "big-credit"
	op.Status.EffectivePriority = 3
	op.Spec = arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "credit-account", Priority: 2,
		RequestedBy: &arbiterv1alpha1.RequesterInfo{Username: "alice@example.com"},
		Targets: []arbiterv1alpha1.Target{{APIVersion: "bank.example.com/v1", Kind: "Account", Name: "alice"},
			{APIVersion: "v1", Kind: "ConfigMap", Name: "ledger"}}}
	return op
}

// A confirmed removal writes one record at info, with every key; a delete
// that found the operation gone or changed writes none; a dry run writes
// one record with the same keys the first time it reports a zombie.
func TestRemoveWritesOneAuditRecordPerRemoval(t *testing.T) {
	zombie := auditedZombie("a", "loser")
	changed := auditedZombie("a", "changed")
	r, _ := fakeCleanerWith(t, interceptor.Funcs{Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		if obj.GetName() == changed.Name {
			return apierrors.NewConflict(schema.GroupResource{Group: "arbiter.dev", Resource: "conflictresolutionoperations"}, obj.GetName(), nil)
		}
		return c.Delete(ctx, obj, opts...)
	}}, zombie, changed)
	sink, records := newRecordingSink(AuditLoggerName, nil)
	r.Audit = logr.New(sink).WithName(AuditLoggerName)
	removedAt := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r.Clock = clocktesting.NewFakeClock(removedAt)
	p := testPolicy("a", "immediate", nil)

	for range 2 { // the second delete finds it gone
		if wait, err := r.remove(t.Context(), p, zombie, "Rejected zombie, Immediate strategy"); wait != 0 || err != nil {
			t.Fatalf("remove: %v, %v", wait, err)
		}
	}
	if wait, err := r.remove(t.Context(), p, changed, "test"); wait != 0 || err != nil {
		t.Fatalf("remove of a changed operation: %v, %v", wait, err)
	}
	got := records.all()
	if len(got) != 1 {
		t.Fatalf("%d audit records, want 1: %+v", len(got), got)
	}
	rec := got[0]
	if rec.Level != 0 || rec.Msg != "Operation removed by cleanup" || rec.Logger != "cleanup.audit" {
		t.Errorf("record %s at V(%d) by %q, want %q at info by cleanup.audit", rec.Msg, rec.Level, rec.Logger, "Operation removed by cleanup")
	}
	want := map[string]string{
		"operation":         `{"name":"loser","namespace":"a"}`,
		"uid":               `"uid-loser"`,
		"function":          `"credit-account"`,
		"requester":         `"alice@example.com"`,
		"phase":             `"Rejected"`,
		"reason":            `"LostStaging"`,
		"winner":            `"big-credit"`,
		"priority":          `2`,
		"effectivePriority": `3`,
		"createdAt":         `"2026-11-29T10:00:00Z"`,
		"completedAt":       `"2026-11-29T10:00:01.5Z"`,
		"removedAt":         `"2026-11-29T12:00:00Z"`,
		"targets":           `[{"apiVersion":"bank.example.com/v1","kind":"Account","name":"alice"},{"apiVersion":"v1","kind":"ConfigMap","name":"ledger"}]`,
		"policy":            `{"kind":"CleanupPolicy","name":"immediate"}`,
		"strategy":          `"Immediate"`,
		"why":               `"Rejected zombie, Immediate strategy"`,
		"dryRun":            `false`,
	}
	if len(rec.Values) != len(auditKeys) || len(want) != len(auditKeys) {
		t.Errorf("keys %v, want %v", keysOf(rec.Values), auditKeys)
	}
	for _, k := range auditKeys {
		raw, _ := json.Marshal(rec.Values[k])
		if string(raw) != want[k] {
			t.Errorf("%s = %s, want %s", k, raw, want[k])
		}
	}

	dry := testPolicy("a", "dry", func(s *arbiterv1alpha1.CleanupPolicySpec) { s.DryRun = true })
	kept := auditedZombie("a", "kept")
	for range 3 { // judged again and again, reported once
		if wait, err := r.remove(t.Context(), dry, kept, "test"); wait != 0 || err != nil {
			t.Fatalf("dryRun remove: %v, %v", wait, err)
		}
	}
	got = records.all()
	if len(got) != 2 {
		t.Fatalf("%d audit records after the dry run, want 2", len(got))
	}
	rec = got[1]
	if rec.Level != 0 || rec.Msg != "Operation would be removed by cleanup (dry run)" || rec.Values["dryRun"] != true ||
		rec.Values["uid"] != "uid-kept" || len(rec.Values) != len(auditKeys) {
		t.Errorf("dry-run record %+v, want the same keys, dryRun true", rec)
	}
	for _, k := range auditKeys {
		if _, ok := rec.Values[k]; !ok {
			t.Errorf("dry-run record lacks %s", k)
		}
	}
}

// The operator-wide default names itself in the record, as in events.
func TestAuditRecordNamesTheDefaultPolicy(t *testing.T) {
	zombie := auditedZombie("a", "loser")
	r, _ := fakeCleaner(t, zombie)
	sink, records := newRecordingSink(AuditLoggerName, nil)
	r.Audit = logr.New(sink).WithName(AuditLoggerName)
	def := cleanup.DefaultPolicy("a", arbiterv1alpha1.CleanupImmediate)
	if wait, err := r.remove(t.Context(), def, zombie, "test"); wait != 0 || err != nil {
		t.Fatalf("remove: %v, %v", wait, err)
	}
	got := records.all()
	if len(got) != 1 {
		t.Fatalf("%d records, want 1", len(got))
	}
	if raw, _ := json.Marshal(got[0].Values["policy"]); string(raw) != `{"kind":"CleanupPolicy","name":"--default-cleanup-strategy"}` {
		t.Errorf("policy %s", raw)
	}
}

// landsWithItsAnswerLost deletes obj, then returns lost as if the answer
// had not come back.
func landsWithItsAnswerLost(ctx context.Context, c client.WithWatch, obj client.Object, lost error, opts ...client.DeleteOption) error {
	if err := c.Delete(ctx, obj, opts...); err != nil {
		return err
	}
	return lost
}

// A delete whose answer is lost (the connection drops, the API server times
// out) is a failed attempt, but may have landed: found gone by the next
// look, it is this removal's, with its one audit record; still there in a
// lagging cache, that says nothing until the delete sent again answers.
func TestADeleteWhoseAnswerIsLostIsRecordedOnceWhenItLanded(t *testing.T) {
	for _, c := range []struct {
		name string
		// lose sends the delete, or not, and returns the error seen.
		lose func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error
		// next is what the zombie controller's next look does.
		next string
	}{
		{"landed, found gone by the next look", func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return landsWithItsAnswerLost(ctx, c, obj, io.ErrUnexpectedEOF, opts...)
		}, "reconcile"},
		{"landed, a lagging cache still shows it, the delete sent again finds it gone", func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			return landsWithItsAnswerLost(ctx, c, obj, apierrors.NewTimeoutError("request did not complete within the allowed duration", 0), opts...)
		}, "remove"},
		{"never landed, the delete sent again removes it", func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error {
			return io.ErrUnexpectedEOF
		}, "remove"},
	} {
		t.Run(c.name, func(t *testing.T) {
			zombie := auditedZombie("a", "loser")
			lost := false
			r, _ := fakeCleanerWith(t, interceptor.Funcs{Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				if !lost {
					lost = true
					return c.lose(ctx, cl, obj, opts...)
				}
				return cl.Delete(ctx, obj, opts...)
			}}, zombie)
			sink, records := newRecordingSink(AuditLoggerName, nil)
			r.Audit = logr.New(sink).WithName(AuditLoggerName)
			p := testPolicy("a", "immediate", nil)
			if _, err := r.remove(t.Context(), p, zombie, "test"); err == nil {
				t.Fatal("remove with the answer lost returned no error, so nothing looks again")
			}
			switch c.next {
			case "reconcile":
				if _, err := r.reconcileZombie(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(zombie)}); err != nil {
					t.Fatal(err)
				}
			case "remove":
				r.unansweredLanded(client.ObjectKeyFromObject(zombie), zombie.UID) // the cache still shows it: nothing yet
				if n := len(records.all()); n != 0 {
					t.Fatalf("%d audit records while the zombie is still in the cache, want none yet", n)
				}
				if _, err := r.remove(t.Context(), p, zombie, "test"); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(records.all()); n != 1 {
				t.Fatalf("%d audit records, want 1", n)
			}
			tr := r.tracker(p)
			if tr.cleaned != 1 || tr.failed != 1 {
				t.Fatalf("counted %d removed, %d failed; want 1 removed and the unanswered attempt failed", tr.cleaned, tr.failed)
			}
		})
	}
}

// Two workers may see a zombie whose delete went unanswered gone at once
// (its own reconcile, a sibling's historyLimit delete): one record. And a
// delete that meets a 409 because another operation took the name since
// does not lose the landed removal's record.
func TestALandedRemovalWhoseAnswerWasLostIsRecordedOnce(t *testing.T) {
	zombie := auditedZombie("a", "loser")
	calls := 0
	r, _ := fakeCleanerWith(t, interceptor.Funcs{Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		if calls++; calls == 1 {
			return landsWithItsAnswerLost(ctx, c, obj, io.ErrUnexpectedEOF, opts...)
		}
		// The name is another operation's by now: its UID fails the precondition.
		return apierrors.NewConflict(schema.GroupResource{Group: "arbiter.dev", Resource: "conflictresolutionoperations"}, obj.GetName(), errors.New("uid precondition"))
	}}, zombie)
	sink, records := newRecordingSink(AuditLoggerName, nil)
	r.Audit = logr.New(sink).WithName(AuditLoggerName)
	p := testPolicy("a", "immediate", nil)
	if _, err := r.remove(t.Context(), p, zombie, "test"); err == nil {
		t.Fatal("remove with the answer lost returned no error")
	}
	// A stale copy judged again: 409, which settles nothing.
	if _, err := r.remove(t.Context(), p, zombie, "test"); err != nil {
		t.Fatal(err)
	}
	if n := len(records.all()); n != 0 {
		t.Fatalf("%d records after the 409, want none yet", n)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { r.unansweredLanded(client.ObjectKeyFromObject(zombie), "uid-of-the-new-one") })
	}
	wg.Wait()
	if n := len(records.all()); n != 1 {
		t.Fatalf("%d audit records, want 1", n)
	}
	if tr := r.tracker(p); tr.cleaned != 1 {
		t.Fatalf("%d removals counted, want 1", tr.cleaned)
	}
}
