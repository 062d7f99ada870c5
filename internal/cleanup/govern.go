package cleanup

import (
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/lru"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// Which policy governs an operation: the oldest of its namespace's
// CleanupPolicies that selects it; else the oldest ClusterCleanupPolicy that
// selects its namespace and it; else none (the operator-wide default, if
// any, is the controller's business).

// Older orders policies for precedence: the oldest, then the lowest name.
func Older(a, b *arbiterv1alpha1.CleanupPolicy) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// ClusterView is a ClusterCleanupPolicy as the CleanupPolicy it is in each
// namespace it covers: the same name, UID, age and spec, no namespace, and
// its own kind in TypeMeta for logs. Everything that judges, rate-limits and
// tracks a policy takes it as is; its key (see Key) has an empty namespace,
// which no CleanupPolicy has.
func ClusterView(cp *arbiterv1alpha1.ClusterCleanupPolicy) *arbiterv1alpha1.CleanupPolicy {
	return &arbiterv1alpha1.CleanupPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: arbiterv1alpha1.GroupVersion.String(), Kind: "ClusterCleanupPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: cp.Name, UID: cp.UID, Generation: cp.Generation,
			CreationTimestamp: cp.CreationTimestamp, DeletionTimestamp: cp.DeletionTimestamp},
		Spec: cp.Spec.CleanupPolicySpec,
	}
}

// IsCluster reports whether p is a ClusterCleanupPolicy's view.
func IsCluster(p *arbiterv1alpha1.CleanupPolicy) bool { return p.Namespace == "" }

// Key is what the controller tracks a policy by: its namespace and name, an
// empty namespace for a ClusterCleanupPolicy.
func Key(p *arbiterv1alpha1.CleanupPolicy) types.NamespacedName {
	return types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
}

// Kind is the kind of the object p is: ClusterCleanupPolicy for a cluster
// policy's view, else CleanupPolicy (the operator-wide default included).
func Kind(p *arbiterv1alpha1.CleanupPolicy) string {
	if IsCluster(p) {
		return "ClusterCleanupPolicy"
	}
	return "CleanupPolicy"
}

// KindName names a policy in events and logs: "CleanupPolicy x" or
// "ClusterCleanupPolicy x".
func KindName(p *arbiterv1alpha1.CleanupPolicy) string { return Kind(p) + " " + p.Name }

// selectorCacheSize bounds the parsed selectors kept: two per policy
// version, far more than a cluster's policies.
const selectorCacheSize = 4096

// Selectors parses each policy's label selectors once per version (UID and
// generation), not at every judgement. Safe for concurrent use; a nil
// *Selectors parses every time.
type Selectors struct{ cache *lru.Cache }

// NewSelectors returns an empty, bounded selector cache.
func NewSelectors() *Selectors { return &Selectors{cache: lru.New(selectorCacheSize)} }

type selectorKey struct {
	uid        types.UID
	generation int64
	field      string
}

type parsedSelector struct {
	sel labels.Selector
	err error
}

// parse returns the selector at field of the object (uid, generation):
// everything when unset, and an error naming the field when it does not
// parse.
func (s *Selectors) parse(uid types.UID, generation int64, field string, ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	key := selectorKey{uid: uid, generation: generation, field: field}
	if s != nil && uid != "" {
		if v, ok := s.cache.Get(key); ok {
			return v.(parsedSelector).sel, v.(parsedSelector).err
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		sel, err = nil, fmt.Errorf("%s: %w", field, err)
	}
	if s != nil && uid != "" {
		s.cache.Add(key, parsedSelector{sel: sel, err: err})
	}
	return sel, err
}

// Selector is p's spec.selector, parsed.
func (s *Selectors) Selector(p *arbiterv1alpha1.CleanupPolicy) (labels.Selector, error) {
	return s.parse(p.UID, p.Generation, "spec.selector", p.Spec.Selector)
}

// NamespaceSelector is cp's spec.namespaceSelector, parsed.
func (s *Selectors) NamespaceSelector(cp *arbiterv1alpha1.ClusterCleanupPolicy) (labels.Selector, error) {
	return s.parse(cp.UID, cp.Generation, "spec.namespaceSelector", cp.Spec.NamespaceSelector)
}

// Problem says why cp selects nothing (a selector that does not parse,
// naming the field), or "".
func (s *Selectors) Problem(cp *arbiterv1alpha1.ClusterCleanupPolicy) string {
	if _, err := s.NamespaceSelector(cp); err != nil {
		return err.Error()
	}
	if _, err := s.parse(cp.UID, cp.Generation, "spec.selector", cp.Spec.Selector); err != nil {
		return err.Error()
	}
	return ""
}

// Covers reports whether cp's namespaceSelector selects a namespace with
// these labels; one that does not parse selects none.
func (s *Selectors) Covers(cp *arbiterv1alpha1.ClusterCleanupPolicy, namespaceLabels map[string]string) bool {
	sel, err := s.NamespaceSelector(cp)
	return err == nil && sel.Matches(labels.Set(namespaceLabels))
}

// candidate is a policy that may govern a namespace's operations, with its
// selector parsed (nil when it does not parse: it selects nothing).
type candidate struct {
	policy  *arbiterv1alpha1.CleanupPolicy
	sel     labels.Selector
	invalid string
}

func (c *candidate) selects(opLabels map[string]string) bool {
	return c.sel != nil && c.sel.Matches(labels.Set(opLabels))
}

// Candidates are the policies that may govern one namespace's operations,
// in precedence order: the namespace's CleanupPolicies oldest first, then
// the ClusterCleanupPolicies that cover the namespace, oldest first. Their
// selectors are parsed when they are gathered; a deleted policy governs
// nothing.
type Candidates struct {
	namespace string
	list      []candidate
}

// NewCandidates gathers the candidates of a namespace with these labels
// from its CleanupPolicies and every ClusterCleanupPolicy.
func NewCandidates(namespace string, namespaceLabels map[string]string, policies []arbiterv1alpha1.CleanupPolicy,
	clusters []arbiterv1alpha1.ClusterCleanupPolicy, sels *Selectors) *Candidates {
	c := &Candidates{namespace: namespace}
	add := func(p *arbiterv1alpha1.CleanupPolicy) {
		sel, err := sels.Selector(p)
		cand := candidate{policy: p, sel: sel}
		if err != nil {
			cand.invalid = err.Error()
		}
		c.list = append(c.list, cand)
	}
	var namespaced, cluster []*arbiterv1alpha1.CleanupPolicy
	for i := range policies {
		if p := &policies[i]; p.Namespace == namespace && p.DeletionTimestamp.IsZero() {
			namespaced = append(namespaced, p)
		}
	}
	for i := range clusters {
		if cp := &clusters[i]; cp.DeletionTimestamp.IsZero() && sels.Covers(cp, namespaceLabels) {
			cluster = append(cluster, ClusterView(cp))
		}
	}
	byAge := func(a, b *arbiterv1alpha1.CleanupPolicy) int {
		switch {
		case Older(a, b):
			return -1
		case Older(b, a):
			return 1
		}
		return 0
	}
	slices.SortFunc(namespaced, byAge)
	slices.SortFunc(cluster, byAge)
	for _, p := range namespaced {
		add(p)
	}
	for _, p := range cluster {
		add(p)
	}
	return c
}

// Namespace is the namespace the candidates are of.
func (c *Candidates) Namespace() string { return c.namespace }

// Policies are the candidates, in precedence order. Read them, never change
// them.
func (c *Candidates) Policies() []*arbiterv1alpha1.CleanupPolicy {
	out := make([]*arbiterv1alpha1.CleanupPolicy, len(c.list))
	for i := range c.list {
		out[i] = c.list[i].policy
	}
	return out
}

// governing is the index of the candidate that governs an operation with
// these labels, or -1: the first in precedence order that selects it.
func (c *Candidates) governing(opLabels map[string]string) int {
	for i := range c.list {
		if c.list[i].selects(opLabels) {
			return i
		}
	}
	return -1
}

// Governing returns the policy that governs op, or nil. Its cost is the
// selectors tried before the first that selects op.
func (c *Candidates) Governing(op *arbiterv1alpha1.ConflictResolutionOperation) *arbiterv1alpha1.CleanupPolicy {
	if op.Namespace != c.namespace {
		return nil
	}
	if i := c.governing(op.Labels); i >= 0 {
		return c.list[i].policy
	}
	return nil
}

// GovernedBy reports whether p is the policy that governs op.
func (c *Candidates) GovernedBy(p *arbiterv1alpha1.CleanupPolicy, op *arbiterv1alpha1.ConflictResolutionOperation) bool {
	gov := c.Governing(op)
	return gov != nil && Key(gov) == Key(p)
}
