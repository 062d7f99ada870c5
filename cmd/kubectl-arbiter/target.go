package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/internal/staging"
)

// defaultRecent is how many recent outcomes `target` shows.
const defaultRecent = 5

func newTargetCommand(o *options) *cobra.Command {
	recent := defaultRecent
	cmd := &cobra.Command{
		Use:   "target <kind>/<name>",
		Short: "Show the operations on a target now: executing, waiting in order, recent outcomes",
		Example: `  kubectl arbiter target configmap/settings -n prod
  kubectl arbiter target accounts.bank.example.com/alice -n bank -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if recent < 0 {
				return fmt.Errorf("--recent: must be 0 or more, got %d", recent)
			}
			return o.runTarget(cmd.Context(), args[0], recent)
		},
	}
	cmd.Flags().IntVar(&recent, "recent", defaultRecent, "How many of the latest finished operations to show.")
	return cmd
}

// TargetKey is a target object: the group and kind its operations name, and where it is.
type TargetKey struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String names the target as the plugin prints it: Kind.group namespace/name.
func (k TargetKey) String() string {
	kind := k.Kind
	if k.Group != "" {
		kind += "." + k.Group
	}
	return fmt.Sprintf("%s %s/%s", kind, k.Namespace, k.Name)
}

// TargetReport is what `target` shows.
type TargetReport struct {
	Target TargetKey `json:"target"`
	// Executing holds the target now (one at most, but for a manager that
	// has not caught up).
	Executing []OperationSummary `json:"executing"`
	// Waiting are the Pending and Queued operations, in the order arbiter
	// decides them.
	Waiting []OperationSummary `json:"waiting"`
	// Recent are the latest finished operations, newest first.
	Recent []OperationSummary `json:"recent"`
}

// OperationSummary is one operation, as a row of `target`.
type OperationSummary struct {
	Name     string                         `json:"name"`
	Function string                         `json:"function"`
	Phase    arbiterv1alpha1.OperationPhase `json:"phase"`
	Reason   string                         `json:"reason,omitempty"`
	// Priority is the effective priority once arbiter recorded it, else spec.priority.
	Priority    int32                          `json:"priority"`
	OnConflict  arbiterv1alpha1.ConflictPolicy `json:"onConflict"`
	Winner      string                         `json:"winner,omitempty"`
	Attempts    int32                          `json:"attempts,omitempty"`
	StagedAt    *metav1.MicroTime              `json:"stagedAt,omitempty"`
	StartedAt   *metav1.MicroTime              `json:"startedAt,omitempty"`
	CompletedAt *metav1.MicroTime              `json:"completedAt,omitempty"`
	CreatedAt   metav1.Time                    `json:"createdAt"`
	Message     string                         `json:"message,omitempty"`
}

func (o *options) runTarget(ctx context.Context, arg string, recent int) error {
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	c, mapper, err := o.client()
	if err != nil {
		return err
	}
	key, err := resolveTarget(mapper, arg)
	if err != nil {
		return err
	}
	key.Namespace = ns
	ops := &arbiterv1alpha1.ConflictResolutionOperationList{}
	if err := c.List(ctx, ops, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing operations in %s: %w", ns, err)
	}
	report := targetReport(key, ops.Items, recent)
	return o.print(report, func(w io.Writer) error { return report.render(w, o.now()) })
}

// resolveTarget turns <kind>/<name> into a target key, the kind resolved
// as kubectl resolves it: a resource, singular, short name or kind, with
// an optional .group (deployments.apps, cm, Account).
func resolveTarget(mapper meta.RESTMapper, arg string) (TargetKey, error) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok || kind == "" || name == "" || strings.Contains(name, "/") {
		return TargetKey{}, fmt.Errorf("target: %q is not <kind>/<name>, for example configmap/settings or deployments.apps/web", arg)
	}
	var gvk schema.GroupVersionKind
	var err error
	fullySpecified, groupResource := schema.ParseResourceArg(kind)
	if fullySpecified != nil {
		gvk, err = mapper.KindFor(*fullySpecified)
	}
	if fullySpecified == nil || err != nil {
		gvk, err = mapper.KindFor(groupResource.WithVersion(""))
	}
	if err != nil {
		return TargetKey{}, fmt.Errorf("target: the server has no resource type %q: %w", kind, err)
	}
	return TargetKey{Group: gvk.Group, Kind: gvk.Kind, Name: name}, nil
}

// names reports whether op has key among its targets.
func names(op *arbiterv1alpha1.ConflictResolutionOperation, key TargetKey) bool {
	return slices.ContainsFunc(op.Spec.Targets, func(t arbiterv1alpha1.Target) bool {
		gv, err := schema.ParseGroupVersion(t.APIVersion)
		return err == nil && gv.Group == key.Group && t.Kind == key.Kind && t.Name == key.Name
	})
}

// targetReport sorts the operations on key into executing, waiting (in the
// manager's order) and the latest recent outcomes.
func targetReport(key TargetKey, ops []arbiterv1alpha1.ConflictResolutionOperation, recent int) TargetReport {
	r := TargetReport{Target: key, Executing: []OperationSummary{}, Waiting: []OperationSummary{}, Recent: []OperationSummary{}}
	var waiting []staging.Contender
	byID := map[staging.ID]*arbiterv1alpha1.ConflictResolutionOperation{}
	var finished []*arbiterv1alpha1.ConflictResolutionOperation
	for i := range ops {
		op := &ops[i]
		if !names(op, key) {
			continue
		}
		switch op.Status.Phase {
		case arbiterv1alpha1.PhaseExecuting:
			r.Executing = append(r.Executing, summarize(op))
		case "", arbiterv1alpha1.PhasePending, arbiterv1alpha1.PhaseQueued:
			id := staging.ID{Namespace: op.Namespace, Name: op.Name}
			byID[id] = op
			waiting = append(waiting, waitingContender(op, id))
		default:
			finished = append(finished, op)
		}
	}
	// The manager's own order: effective priority, then stagedAt, then UID.
	staging.Rank(waiting)
	for _, c := range waiting {
		r.Waiting = append(r.Waiting, summarize(byID[c.ID]))
	}
	slices.SortStableFunc(finished, func(a, b *arbiterv1alpha1.ConflictResolutionOperation) int {
		return completed(b).Compare(completed(a))
	})
	for _, op := range finished[:min(recent, len(finished))] {
		r.Recent = append(r.Recent, summarize(op))
	}
	return r
}

// waitingContender is a waiting operation as the manager ranks it. A
// queued one carries the priority and stagedAt its batch recorded; a
// pending one is ranked on its own priority and creation, as the manager
// has recorded neither yet (a parentRef may still raise its priority).
func waitingContender(op *arbiterv1alpha1.ConflictResolutionOperation, id staging.ID) staging.Contender {
	return staging.Contender{ID: id, UID: string(op.UID), Priority: priorityOf(op), StagedAt: stagedAt(op)}
}

func priorityOf(op *arbiterv1alpha1.ConflictResolutionOperation) int32 {
	switch {
	case op.Status.EffectivePriority > 0:
		return op.Status.EffectivePriority
	case op.Spec.Priority > 0:
		return op.Spec.Priority
	}
	return arbiterv1alpha1.PriorityNormal
}

func stagedAt(op *arbiterv1alpha1.ConflictResolutionOperation) time.Time {
	if op.Status.StagedAt != nil {
		return op.Status.StagedAt.Time
	}
	return op.CreationTimestamp.Time
}

func completed(op *arbiterv1alpha1.ConflictResolutionOperation) time.Time {
	if op.Status.CompletedAt != nil {
		return op.Status.CompletedAt.Time
	}
	return op.CreationTimestamp.Time
}

func summarize(op *arbiterv1alpha1.ConflictResolutionOperation) OperationSummary {
	s := op.Status
	onConflict := op.Spec.Staging.OnConflict
	if onConflict == "" {
		onConflict = arbiterv1alpha1.ConflictPolicyReject
	}
	return OperationSummary{Name: op.Name, Function: op.Spec.Function, Phase: phaseOf(op), Reason: s.Reason,
		Priority: priorityOf(op), OnConflict: onConflict, Winner: s.Winner, Attempts: s.Attempts,
		StagedAt: s.StagedAt, StartedAt: s.StartedAt, CompletedAt: s.CompletedAt, CreatedAt: op.CreationTimestamp, Message: s.Message}
}

// phaseOf is the operation's phase; Pending before the manager wrote one.
func phaseOf(op *arbiterv1alpha1.ConflictResolutionOperation) arbiterv1alpha1.OperationPhase {
	if op.Status.Phase == "" {
		return arbiterv1alpha1.PhasePending
	}
	return op.Status.Phase
}

func microOr(t *metav1.MicroTime, or metav1.Time) time.Time {
	if t != nil {
		return t.Time
	}
	return or.Time
}

// render writes the report as three tables.
func (r TargetReport) render(w io.Writer, now time.Time) error {
	if _, err := fmt.Fprintf(w, "Target: %s\n\n", r.Target); err != nil {
		return err
	}
	sections := []struct {
		title  string
		header []string
		ops    []OperationSummary
		row    func(i int, s OperationSummary) []string
	}{
		{"Executing", []string{"NAME", "FUNCTION", "PRIORITY", "ATTEMPTS", "STARTED"}, r.Executing,
			func(_ int, s OperationSummary) []string {
				return []string{s.Name, s.Function, itoa(s.Priority), itoa(s.Attempts), age(now, microOr(s.StartedAt, s.CreatedAt))}
			}},
		{"Waiting, in the order arbiter decides them (effective priority, then staged time, then UID; one not yet staged by its creation, to the second)",
			[]string{"#", "NAME", "FUNCTION", "PHASE", "PRIORITY", "ON CONFLICT", "BEHIND", "STAGED"}, r.Waiting,
			func(i int, s OperationSummary) []string {
				return []string{strconv.Itoa(i + 1), s.Name, s.Function, string(s.Phase), itoa(s.Priority), string(s.OnConflict),
					orNone(s.Winner), age(now, microOr(s.StagedAt, s.CreatedAt))}
			}},
		{"Recent outcomes, newest first", []string{"NAME", "FUNCTION", "PHASE", "REASON", "WINNER", "PRIORITY", "ATTEMPTS", "COMPLETED"}, r.Recent,
			func(_ int, s OperationSummary) []string {
				return []string{s.Name, s.Function, string(s.Phase), s.Reason, orNone(s.Winner), itoa(s.Priority), itoa(s.Attempts),
					age(now, microOr(s.CompletedAt, s.CreatedAt))}
			}},
	}
	for i, sec := range sections {
		if i > 0 {
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		if len(sec.ops) == 0 {
			if _, err := fmt.Fprintf(w, "%s: none\n", sec.title); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintf(w, "%s:\n", sec.title); err != nil {
			return err
		}
		rows := make([][]string, 0, len(sec.ops))
		for j, s := range sec.ops {
			rows = append(rows, sec.row(j, s))
		}
		if err := table(w, sec.header, rows); err != nil {
			return err
		}
	}
	return nil
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
