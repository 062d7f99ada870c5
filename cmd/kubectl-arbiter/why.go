package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

func newWhyCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "why <operation>",
		Short: "Explain in sentences why an operation is where it is: batch, winner, priorities, attempts, conflicts, preemption",
		Example: `  kubectl arbiter why credit-alice -n bank
  kubectl arbiter why cro/credit-alice -n bank -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.runWhy(cmd.Context(), args[0]) },
	}
}

// WhyReport is what `why` shows.
type WhyReport struct {
	Namespace string                         `json:"namespace"`
	Name      string                         `json:"name"`
	Phase     arbiterv1alpha1.OperationPhase `json:"phase"`
	Reason    string                         `json:"reason,omitempty"`
	// Explanation is the story of the operation, one sentence per fact.
	Explanation []string `json:"explanation"`
}

func (o *options) runWhy(ctx context.Context, arg string) error {
	name, err := operationName(arg)
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	c, _, err := o.client()
	if err != nil {
		return err
	}
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, op); err != nil {
		return fmt.Errorf("reading operation %s/%s: %w", ns, name, err)
	}
	// Who it lost to, and who lost to it, tell the batch.
	var winner *arbiterv1alpha1.ConflictResolutionOperation
	if op.Status.Winner != "" {
		winner = &arbiterv1alpha1.ConflictResolutionOperation{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: op.Status.Winner}, winner); apierrors.IsNotFound(err) {
			winner = nil
		} else if err != nil {
			return fmt.Errorf("reading the winner %s/%s: %w", ns, op.Status.Winner, err)
		}
	}
	all := &arbiterv1alpha1.ConflictResolutionOperationList{}
	if err := c.List(ctx, all, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing operations in %s: %w", ns, err)
	}
	var beaten []arbiterv1alpha1.ConflictResolutionOperation
	for _, other := range all.Items {
		if other.Status.Winner == op.Name && other.UID != op.UID {
			beaten = append(beaten, other)
		}
	}
	report := explain(op, winner, beaten)
	return o.print(report, func(w io.Writer) error { return report.render(w) })
}

// operationName accepts NAME, cro/NAME and the resource's other names, as
// kubectl does for one kind.
func operationName(arg string) (string, error) {
	kind, name, found := strings.Cut(arg, "/")
	if !found {
		return arg, nil
	}
	switch strings.ToLower(kind) {
	case "cro", "conflictresolutionoperation", "conflictresolutionoperations",
		"conflictresolutionoperation.arbiter.dev", "conflictresolutionoperations.arbiter.dev":
	default:
		return "", fmt.Errorf("operation: %q is not an operation name or cro/<name>", arg)
	}
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("operation: %q is not an operation name or cro/<name>", arg)
	}
	return name, nil
}

// explain tells the story of op from its status and conditions, from the
// operation that beat it (winner, nil when none or gone) and from those it
// beat (beaten).
func explain(op, winner *arbiterv1alpha1.ConflictResolutionOperation, beaten []arbiterv1alpha1.ConflictResolutionOperation) WhyReport {
	s := &op.Status
	r := WhyReport{Namespace: op.Namespace, Name: op.Name, Phase: phaseOf(op), Reason: s.Reason}
	say := func(format string, args ...any) { r.Explanation = append(r.Explanation, fmt.Sprintf(format, args...)) }

	say("Operation %s/%s (function %s) targets %s.", op.Namespace, op.Name, op.Spec.Function, describeTargets(op))
	if rb := op.Spec.RequestedBy; rb != nil && rb.Username != "" {
		say("It was requested by %s; arbiter writes only what that user may write.", rb.Username)
	}
	say("%s", outcomeSentence(op))

	own := op.Spec.Priority
	if own == 0 {
		own = arbiterv1alpha1.PriorityNormal
	}
	if s.EffectivePriority > 0 {
		if s.EffectivePriority > own {
			say("It contended with effective priority %d: its own is %d, raised by its parent %s.", s.EffectivePriority, own, parentName(op))
		} else {
			say("It contended with effective priority %d.", s.EffectivePriority)
		}
	}
	if c := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.OperationStaged); c != nil && strings.Contains(c.Message, "; ") {
		say("The Staged condition says: %s.", strings.TrimSuffix(c.Message, "."))
	}

	switch {
	case r.Phase == arbiterv1alpha1.PhasePending:
		say("arbiter has not decided it yet: its batch closes %s after it is staged, or another operation executes on its target and it waits for the next batch.",
			op.Spec.Staging.WindowOrDefault())
	case r.Phase == arbiterv1alpha1.PhaseQueued:
		say("It lost its batch to %s and, with onConflict: Queue, waits its turn: it contends again, keeping its place, each time the target is free.", s.Winner)
		say("%s", comparison(op, winner))
	case s.Reason == arbiterv1alpha1.ReasonLostStaging:
		say("It lost staging to %s. %s", s.Winner, comparison(op, winner))
		say("With onConflict: Reject, a loser ends Rejected; with Queue it would have waited its turn.")
	case s.Reason == arbiterv1alpha1.ReasonPreempted:
		say("It was executing when %s, of strictly higher effective priority%s, took the target after its grace period of %s: it stopped before its next write and rolled back anything it had written.",
			s.Winner, priorityGap(op, winner), op.Spec.GracePeriodOrDefault())
	}
	if won := wonOver(beaten); won != "" {
		say("%s", won)
	}
	if a := attemptsSentence(op); a != "" {
		say("%s", a)
	}
	for _, t := range s.Targets {
		say("%s", targetSentence(t))
	}
	if s.Message != "" {
		say("arbiter's message: %s.", strings.TrimSuffix(s.Message, "."))
	}
	if hint := hints[s.Reason]; hint != "" {
		say("%s", hint)
	}
	if t := timeline(op); t != "" {
		say("%s", t)
	}
	return r
}

func describeTargets(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	parts := make([]string, 0, len(op.Spec.Targets))
	for _, t := range op.Spec.Targets {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", t.Kind, t.Name, t.APIVersion))
	}
	return strings.Join(parts, ", ")
}

func parentName(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	if op.Spec.ParentRef == nil {
		return "<none>"
	}
	return op.Spec.ParentRef.Name
}

func outcomeSentence(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	s := &op.Status
	phase := phaseOf(op)
	if !phase.IsTerminal() {
		return fmt.Sprintf("It is %s, not finished.", phase)
	}
	took := ""
	if s.CompletedAt != nil {
		took = fmt.Sprintf(", %s after it was created", round(s.CompletedAt.Sub(op.CreationTimestamp.Time)))
	}
	return fmt.Sprintf("It ended %s (%s)%s.", phase, s.Reason, took)
}

// comparison says why winner ranked ahead of op, in the manager's order:
// effective priority, then stagedAt, then UID.
func comparison(op, winner *arbiterv1alpha1.ConflictResolutionOperation) string {
	if winner == nil {
		return "The winner is gone (cleaned up or deleted), so its priority cannot be compared."
	}
	wp, p := priorityOf(winner), priorityOf(op)
	ws, st := stagedAt(winner), stagedAt(op)
	switch {
	case wp > p:
		return fmt.Sprintf("%s ranked first with effective priority %d, higher than this one's %d.", winner.Name, wp, p)
	case wp < p:
		// Possible when the winner held the target first, in an earlier batch.
		return fmt.Sprintf("%s had effective priority %d, lower than this one's %d: it had claimed the target in an earlier decision.", winner.Name, wp, p)
	case ws.Before(st):
		return fmt.Sprintf("Both had effective priority %d; %s was staged %s earlier, and the earlier one ranks first.", p, winner.Name, round(st.Sub(ws)))
	case ws.Equal(st) && winner.UID < op.UID:
		return fmt.Sprintf("Both had effective priority %d and were staged at the same instant; %s has the lower UID, the last tie-break.", p, winner.Name)
	}
	return fmt.Sprintf("Both had effective priority %d; %s claimed the target in an earlier decision.", p, winner.Name)
}

func priorityGap(op, winner *arbiterv1alpha1.ConflictResolutionOperation) string {
	if winner == nil {
		return ""
	}
	return fmt.Sprintf(" (%d against its %d)", priorityOf(winner), priorityOf(op))
}

// wonOver names the operations that lost to this one and are still there.
func wonOver(beaten []arbiterv1alpha1.ConflictResolutionOperation) string {
	var lost, preempted []string
	for i := range beaten {
		b := &beaten[i]
		entry := fmt.Sprintf("%s (%s, priority %d)", b.Name, phaseOf(b), priorityOf(b))
		if b.Status.Reason == arbiterv1alpha1.ReasonPreempted {
			preempted = append(preempted, entry)
		} else {
			lost = append(lost, entry)
		}
	}
	slices.Sort(lost)
	slices.Sort(preempted)
	var out []string
	if len(lost) > 0 {
		out = append(out, fmt.Sprintf("It won over %d operation(s) still on record: %s.", len(lost), strings.Join(lost, ", ")))
	}
	if len(preempted) > 0 {
		out = append(out, fmt.Sprintf("It preempted %s.", strings.Join(preempted, ", ")))
	}
	return strings.Join(out, " ")
}

// attemptsSentence counts write attempts and, where status tells them
// apart, the 409 Conflicts among them.
func attemptsSentence(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	s := &op.Status
	if s.Attempts == 0 {
		if phaseOf(op).IsTerminal() {
			return "It made no write attempt: no target was written."
		}
		return ""
	}
	switch s.Reason {
	case arbiterv1alpha1.ReasonApplied:
		conflicts := int(s.Attempts) - len(s.Targets)
		if conflicts > 0 {
			return fmt.Sprintf("It made %d write attempt(s): %d met a 409 Conflict (another writer changed the target between read and write) and were retried from a fresh read after a backoff.",
				s.Attempts, conflicts)
		}
		return fmt.Sprintf("It made %d write attempt(s), with no conflict.", s.Attempts)
	case arbiterv1alpha1.ReasonConflictRetriesExhausted:
		return fmt.Sprintf("It made %d write attempt(s) and the target changed under them until spec.occ.maxRetries (%d) ran out.",
			s.Attempts, op.Spec.OCC.MaxRetriesOrDefault())
	}
	return fmt.Sprintf("It made %d write attempt(s).", s.Attempts)
}

func targetSentence(t arbiterv1alpha1.TargetStatus) string {
	switch {
	case t.Applied:
		return fmt.Sprintf("%s %s: written, resourceVersion %s -> %s.", t.Kind, t.Name, orNone(t.ResourceVersionBefore), orNone(t.ResourceVersionAfter))
	case t.ResourceVersionAfter != "":
		return fmt.Sprintf("%s %s: written at resourceVersion %s, then rolled back.", t.Kind, t.Name, t.ResourceVersionAfter)
	}
	return fmt.Sprintf("%s %s: not written.", t.Kind, t.Name)
}

// hints say what to do about an outcome that needs someone.
var hints = map[string]string{
	arbiterv1alpha1.ReasonConflictRetriesExhausted: "Another writer keeps changing the target: find it, or raise spec.occ.maxRetries.",
	arbiterv1alpha1.ReasonForbidden:                "Its requester may not get and update the target: grant that in RBAC, or have someone who may submit it.",
	arbiterv1alpha1.ReasonTimeout:                  "It was not applied within spec.timeout: its target was busy or kept conflicting.",
	arbiterv1alpha1.ReasonRollbackFailed: "A target could not be restored: a human must check it, then annotate the operation " +
		arbiterv1alpha1.AcknowledgedAnnotation + "=true so that cleanup may remove it.",
	arbiterv1alpha1.ReasonTargetNotFound: "A target does not exist: create it, or fix the operation's target.",
}

func timeline(op *arbiterv1alpha1.ConflictResolutionOperation) string {
	s := &op.Status
	created := op.CreationTimestamp.Time
	var parts []string
	for _, step := range []struct {
		what string
		at   *time.Time
	}{
		{"staged", microTime(s.StagedAt)},
		{"started", microTime(s.StartedAt)},
		{"completed", microTime(s.CompletedAt)},
	} {
		if step.at != nil {
			parts = append(parts, fmt.Sprintf("%s +%s", step.what, round(step.at.Sub(created))))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("Timeline from creation (%s): %s.", created.UTC().Format(time.RFC3339), strings.Join(parts, ", "))
}

func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}

// render writes the explanation, one sentence a line.
func (r WhyReport) render(w io.Writer) error {
	reason := ""
	if r.Reason != "" {
		reason = "/" + r.Reason
	}
	if _, err := fmt.Fprintf(w, "%s/%s: %s%s\n", r.Namespace, r.Name, r.Phase, reason); err != nil {
		return err
	}
	for _, line := range r.Explanation {
		if _, err := fmt.Fprintf(w, "  %s\n", line); err != nil {
			return err
		}
	}
	return nil
}

func microTime(t *metav1.MicroTime) *time.Time {
	if t == nil {
		return nil
	}
	return &t.Time
}
