package main

import (
	"cmp"
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
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

func newHealthCommand(o *options) *cobra.Command {
	allNamespaces := false
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Show cleanup health per namespace, from the CleanupPolicies' status (and, with -A, the ClusterCleanupPolicies')",
		Example: `  kubectl arbiter health -n bank
  kubectl arbiter health -A -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.runHealth(cmd.Context(), allNamespaces) },
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false,
		"Show every namespace that has a CleanupPolicy, and the ClusterCleanupPolicies as namespace "+clusterRow+".")
	return cmd
}

// HealthReport is what `health` shows: one entry per namespace with a
// CleanupPolicy.
type HealthReport struct {
	Namespaces []NamespaceHealth `json:"namespaces"`
	// Note says why the report is empty, when it is, or what it leaves out.
	Note string `json:"note,omitempty"`
}

// NamespaceHealth is a namespace's cleanup health: the worst of its
// policies', with their zombies added up.
type NamespaceHealth struct {
	Namespace              string                      `json:"namespace"`
	Health                 arbiterv1alpha1.HealthState `json:"health"`
	Zombies                int64                       `json:"zombies"`
	OldestZombieAgeSeconds int64                       `json:"oldestZombieAgeSeconds"`
	Policies               []PolicyHealth              `json:"policies"`
}

// PolicyHealth is one CleanupPolicy's report, from its status.
type PolicyHealth struct {
	Name                      string                          `json:"name"`
	Strategy                  arbiterv1alpha1.CleanupStrategy `json:"strategy"`
	DryRun                    bool                            `json:"dryRun,omitempty"`
	Health                    arbiterv1alpha1.HealthState     `json:"health"`
	Zombies                   int32                           `json:"zombies"`
	OldestZombieAgeSeconds    int64                           `json:"oldestZombieAgeSeconds"`
	CleanedTotal              int64                           `json:"cleanedTotal"`
	CleanupFailuresTotal      int64                           `json:"cleanupFailuresTotal"`
	CleanupFailureRatePercent int32                           `json:"cleanupFailureRatePercent"`
	LatencyP50                string                          `json:"latencyP50,omitempty"`
	LatencyP99                string                          `json:"latencyP99,omitempty"`
	LastSweepTime             *time.Time                      `json:"lastSweepTime,omitempty"`
	Issues                    []string                        `json:"issues,omitempty"`
}

// healthUnknown is the health of a policy whose status is not written yet.
const healthUnknown arbiterv1alpha1.HealthState = "Unknown"

func (o *options) runHealth(ctx context.Context, allNamespaces bool) error {
	ns := ""
	if !allNamespaces {
		var err error
		if ns, err = o.namespace(); err != nil {
			return err
		}
	}
	c, _, err := o.client()
	if err != nil {
		return err
	}
	policies := &arbiterv1alpha1.CleanupPolicyList{}
	if err := c.List(ctx, policies, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing CleanupPolicies: %w", err)
	}
	clustersHidden := false
	if allNamespaces {
		clusters := &arbiterv1alpha1.ClusterCleanupPolicyList{}
		// A user who may not list cluster policies still sees the rest,
		// and is told what is left out.
		switch err := c.List(ctx, clusters); {
		case apierrors.IsForbidden(err):
			clustersHidden = true
		case err != nil && !meta.IsNoMatchError(err):
			return fmt.Errorf("listing ClusterCleanupPolicies: %w", err)
		}
		for i := range clusters.Items {
			policies.Items = append(policies.Items, clusterAsRow(&clusters.Items[i]))
		}
	}
	report := healthReport(policies.Items, ns, clustersHidden)
	return o.print(report, func(w io.Writer) error { return report.render(w, o.now()) })
}

// clusterRow is the namespace column of a ClusterCleanupPolicy's row.
const clusterRow = "(cluster)"

// clusterAsRow shows a ClusterCleanupPolicy as a policy of namespace
// clusterRow, its worst namespaces among its issues.
func clusterAsRow(cp *arbiterv1alpha1.ClusterCleanupPolicy) arbiterv1alpha1.CleanupPolicy {
	p := arbiterv1alpha1.CleanupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: clusterRow, Name: cp.Name},
		Spec: cp.Spec.CleanupPolicySpec, Status: *cp.Status.CleanupPolicyStatus.DeepCopy()}
	if len(cp.Status.Namespaces) > 0 {
		var worst []string
		for _, n := range cp.Status.Namespaces {
			worst = append(worst, fmt.Sprintf("%s (%s, %d zombies)", n.Namespace, n.Health, n.Zombies))
		}
		p.Status.Issues = append(p.Status.Issues, fmt.Sprintf("Worst of %d namespaces with zombies: %s",
			cp.Status.NamespacesWithZombies, strings.Join(worst, ", ")))
	}
	return p
}

// clustersHiddenNote says that a report leaves ClusterCleanupPolicies out.
const clustersHiddenNote = "ClusterCleanupPolicies are not shown: you may not list them."

// healthReport groups policies by namespace. ns is the namespace asked
// for, empty for all; clustersHidden says the ClusterCleanupPolicies could
// not be listed (forbidden).
func healthReport(policies []arbiterv1alpha1.CleanupPolicy, ns string, clustersHidden bool) HealthReport {
	r := HealthReport{Namespaces: []NamespaceHealth{}}
	byNS := map[string]*NamespaceHealth{}
	for i := range policies {
		p := &policies[i]
		n, ok := byNS[p.Namespace]
		if !ok {
			n = &NamespaceHealth{Namespace: p.Namespace}
			byNS[p.Namespace] = n
		}
		ph := policyHealth(p)
		n.Policies = append(n.Policies, ph)
		n.Zombies += int64(ph.Zombies)
		n.OldestZombieAgeSeconds = max(n.OldestZombieAgeSeconds, ph.OldestZombieAgeSeconds)
		if severity(ph.Health) > severity(n.Health) {
			n.Health = ph.Health
		}
	}
	for _, n := range byNS {
		slices.SortFunc(n.Policies, func(a, b PolicyHealth) int { return cmp.Compare(a.Name, b.Name) })
		r.Namespaces = append(r.Namespaces, *n)
	}
	slices.SortFunc(r.Namespaces, func(a, b NamespaceHealth) int { return cmp.Compare(a.Namespace, b.Namespace) })
	switch {
	case clustersHidden && len(r.Namespaces) == 0:
		r.Note = "No CleanupPolicy in any namespace. " + clustersHiddenNote
	case clustersHidden:
		r.Note = clustersHiddenNote
	case len(r.Namespaces) == 0:
		if ns == "" {
			r.Note = "No CleanupPolicy in any namespace and no ClusterCleanupPolicy: zombies are kept unless the manager runs with --default-cleanup-strategy."
		} else {
			r.Note = fmt.Sprintf("No CleanupPolicy in namespace %s: its zombies are kept unless a ClusterCleanupPolicy covers it "+
				"(kubectl arbiter health -A) or the manager runs with --default-cleanup-strategy.", ns)
		}
	}
	return r
}

func policyHealth(p *arbiterv1alpha1.CleanupPolicy) PolicyHealth {
	s := &p.Status
	strategy := p.Spec.Strategy
	if strategy == "" {
		strategy = arbiterv1alpha1.CleanupDeferred
	}
	h := PolicyHealth{Name: p.Name, Strategy: strategy, DryRun: p.Spec.DryRun, Health: s.Health,
		Zombies: s.Zombies, OldestZombieAgeSeconds: s.OldestZombieAgeSeconds,
		CleanedTotal: s.CleanedTotal, CleanupFailuresTotal: s.CleanupFailuresTotal, CleanupFailureRatePercent: s.CleanupFailureRatePercent,
		Issues: slices.Clone(s.Issues)}
	// What the conditions say beyond health: a policy that selects nothing,
	// or one that an older policy overrides.
	if c := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.PolicyReady); c != nil && c.Status == metav1.ConditionFalse {
		h.Issues = append(h.Issues, "Not ready: "+c.Message)
	}
	if c := meta.FindStatusCondition(s.Conditions, arbiterv1alpha1.PolicyOverlapping); c != nil && c.Status == metav1.ConditionTrue {
		h.Issues = append(h.Issues, "Overlapping: "+c.Message)
	}
	if h.Health == "" {
		h.Health = healthUnknown
	}
	if l := s.CleanupLatency; l != nil {
		if l.P50 != nil {
			h.LatencyP50 = l.P50.Duration.String()
		}
		if l.P99 != nil {
			h.LatencyP99 = l.P99.Duration.String()
		}
	}
	if s.LastSweepTime != nil {
		t := s.LastSweepTime.Time
		h.LastSweepTime = &t
	}
	return h
}

// severity orders health states, worst last.
func severity(h arbiterv1alpha1.HealthState) int {
	return slices.Index([]arbiterv1alpha1.HealthState{"", arbiterv1alpha1.HealthHealthy, healthUnknown,
		arbiterv1alpha1.HealthDegraded, arbiterv1alpha1.HealthUnhealthy}, h)
}

// render writes one row per policy, then the issues in sentences.
func (r HealthReport) render(w io.Writer, now time.Time) error {
	if len(r.Namespaces) == 0 {
		_, err := fmt.Fprintln(w, r.Note)
		return err
	}
	var rows [][]string
	var issues []string
	for _, n := range r.Namespaces {
		for _, p := range n.Policies {
			strategy := string(p.Strategy)
			if p.DryRun {
				strategy += " (dry run)"
			}
			oldest := "-"
			if p.Zombies > 0 {
				oldest = duration.HumanDuration(time.Duration(p.OldestZombieAgeSeconds) * time.Second)
			}
			latency := "-"
			if p.LatencyP50 != "" {
				latency = p.LatencyP50 + "/" + p.LatencyP99
			}
			sweep := "never"
			if p.LastSweepTime != nil {
				sweep = age(now, *p.LastSweepTime) + " ago"
			}
			rows = append(rows, []string{n.Namespace, p.Name, strategy, string(p.Health), itoa(p.Zombies), oldest,
				fmt.Sprintf("%d%%", p.CleanupFailureRatePercent), latency, fmt.Sprint(p.CleanedTotal), sweep})
			for _, i := range p.Issues {
				issues = append(issues, fmt.Sprintf("%s/%s: %s", n.Namespace, p.Name, i))
			}
		}
	}
	if err := table(w, []string{"NAMESPACE", "POLICY", "STRATEGY", "HEALTH", "ZOMBIES", "OLDEST ZOMBIE",
		"FAILURES (15m)", "LATENCY P50/P99", "CLEANED", "LAST SWEEP"}, rows); err != nil {
		return err
	}
	if len(issues) > 0 {
		if _, err := fmt.Fprintln(w, "\nIssues:"); err != nil {
			return err
		}
		for _, i := range issues {
			if _, err := fmt.Fprintf(w, "  %s\n", i); err != nil {
				return err
			}
		}
	}
	if r.Note != "" {
		if _, err := fmt.Fprintf(w, "\n%s\n", r.Note); err != nil {
			return err
		}
	}
	return nil
}
