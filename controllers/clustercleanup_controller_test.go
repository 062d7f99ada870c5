package controllers

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// tenantLabel marks the namespaces a spec's cluster policies cover: every
// cluster policy here selects its own value of it, so that it never governs
// another spec's namespaces.
const tenantLabel = "arbiter.test/tenant"

// createClusterPolicy creates a ClusterCleanupPolicy covering the
// namespaces labelled tenantLabel=tenant, deleted when the spec ends.
func createClusterPolicy(name, tenant string, mutate func(*arbiterv1alpha1.ClusterCleanupPolicySpec)) *arbiterv1alpha1.ClusterCleanupPolicy {
	GinkgoHelper()
	p := &arbiterv1alpha1.ClusterCleanupPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{tenantLabel: tenant}}
	if mutate != nil {
		mutate(&p.Spec)
	}
	Expect(k8sClient.Create(ctx, p)).To(Succeed())
	DeferCleanup(func() {
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, p))).To(Succeed())
	})
	return p
}

// tenantNamespace is a new namespace labelled tenantLabel=tenant.
func tenantNamespace(tenant string) string {
	GinkgoHelper()
	ns := newNamespace()
	labelNamespace(ns, tenant)
	return ns
}

func labelNamespace(name, tenant string) {
	GinkgoHelper()
	ns := &corev1.Namespace{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, ns)).To(Succeed())
	ns.Labels = map[string]string{tenantLabel: tenant}
	Expect(k8sClient.Update(ctx, ns)).To(Succeed())
}

func clusterPolicyStatus(p *arbiterv1alpha1.ClusterCleanupPolicy) arbiterv1alpha1.ClusterCleanupPolicyStatus {
	GinkgoHelper()
	got := &arbiterv1alpha1.ClusterCleanupPolicy{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), got)).To(Succeed())
	return got.Status
}

// tenants numbers the specs' tenant label values.
var tenants int

func newTenant() string {
	tenants++
	return fmt.Sprintf("t%d-%d", tenants, time.Now().UnixNano()%100000)
}

var _ = Describe("ClusterCleanupPolicy", func() {
	It("removes zombies in a namespace that has no CleanupPolicy, and reports it on the cluster policy", func() {
		tenant := newTenant()
		ns := tenantNamespace(tenant)
		createAccount(ns, "alice", 0)
		p := createClusterPolicy("immediate-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
		})
		losers, winner := rejectedOn(ns, "alice", 2, nil)
		Eventually(func() bool { return exists(losers[0]) || exists(losers[1]) }, util.Timeout, util.Interval).Should(BeFalse())
		Expect(exists(winner)).To(BeTrue(), "Succeeded operations are kept")
		Eventually(func(g Gomega) {
			s := clusterPolicyStatus(p)
			g.Expect(s.CleanedTotal).To(BeEquivalentTo(2))
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthHealthy))
			g.Expect(meta.IsStatusConditionTrue(s.Conditions, arbiterv1alpha1.PolicyReady)).To(BeTrue())
			// Events about a cluster-scoped object are recorded in default.
			g.Expect(events("default", p.Name, corev1.EventTypeNormal)).To(ContainElement(HavePrefix("Cleaned: Removed")))
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("leaves what a CleanupPolicy of the namespace selects to it, whatever their ages", func() {
		tenant := newTenant()
		ns := tenantNamespace(tenant)
		createAccount(ns, "alice", 0)
		createAccount(ns, "bob", 0)
		p := createClusterPolicy("immediate-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
		})
		// Younger than the cluster policy: it wins all the same.
		audit := map[string]string{"team": "audit"}
		team := createPolicy(ns, "audit", func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Selector = &metav1.LabelSelector{MatchLabels: audit}
			s.Retention = duration(time.Hour)
		})
		audited, _ := rejectedOn(ns, "alice", 1, audit)
		other, _ := rejectedOn(ns, "bob", 1, nil)
		Eventually(func() bool { return exists(other[0]) }, util.Timeout, util.Interval).Should(BeFalse(), "the cluster policy governs the rest")
		Consistently(func() bool { return exists(audited[0]) }, 2*time.Second, util.Interval).Should(BeTrue(), "the CleanupPolicy keeps it an hour")
		Eventually(func(g Gomega) {
			g.Expect(policyStatus(team).Zombies).To(BeEquivalentTo(1))
			s := clusterPolicyStatus(p)
			g.Expect(s.CleanedTotal).To(BeEquivalentTo(1))
			g.Expect(s.Zombies).To(BeEquivalentTo(0))
			g.Expect(meta.IsStatusConditionFalse(s.Conditions, arbiterv1alpha1.PolicyOverlapping)).To(BeTrue(),
				"a namespace's own policy winning is the rule, not an overlap")
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("among cluster policies, the oldest governs and the others say so", func() {
		tenant := newTenant()
		ns := tenantNamespace(tenant)
		createAccount(ns, "alice", 0)
		createClusterPolicy("a-first-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
		})
		// Created after, or in the same second and after it by name.
		second := createClusterPolicy("b-second-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Retention = duration(time.Hour)
		})
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		Eventually(func() bool { return exists(losers[0]) }, util.Timeout, util.Interval).Should(BeFalse(), "the first (Immediate) governs")
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(clusterPolicyStatus(second).Conditions, arbiterv1alpha1.PolicyOverlapping)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("ClusterCleanupPolicy a-first-" + tenant))
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("namespaceSelector: leaves an unlabelled namespace alone until it is labelled", func() {
		tenant := newTenant()
		ns := newNamespace()
		createAccount(ns, "alice", 0)
		p := createClusterPolicy("immediate-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
		})
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		Consistently(func() bool { return exists(losers[0]) }, 2*time.Second, util.Interval).Should(BeTrue())
		Expect(clusterPolicyStatus(p).CleanedTotal).To(BeZero())

		labelNamespace(ns, tenant)
		Eventually(func() bool { return exists(losers[0]) }, util.Timeout, util.Interval).Should(BeFalse())
	})

	It("status: sums its namespaces and lists the worst first", func() {
		tenant := newTenant()
		busy, calm := tenantNamespace(tenant), tenantNamespace(tenant)
		createAccount(busy, "alice", 0)
		createAccount(calm, "bob", 0)
		p := createClusterPolicy("keep-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Retention = duration(time.Hour)
			s.Health.MaxZombies = ptr.To[int32](2)
		})
		rejectedOn(busy, "alice", 3, nil)
		rejectedOn(calm, "bob", 1, nil)
		Eventually(func(g Gomega) {
			s := clusterPolicyStatus(p)
			g.Expect(s.Zombies).To(BeEquivalentTo(4))
			g.Expect(s.Health).To(Equal(arbiterv1alpha1.HealthDegraded))
			g.Expect(s.Issues).To(ContainElement("High zombie count: 4 (threshold 2)"))
			g.Expect(s.NamespacesWithZombies).To(BeEquivalentTo(2))
			g.Expect(s.Namespaces).To(HaveLen(2))
			g.Expect(s.Namespaces[0]).To(Equal(arbiterv1alpha1.NamespaceHealth{Namespace: busy, Health: arbiterv1alpha1.HealthDegraded,
				Zombies: 3, OldestZombieAgeSeconds: s.Namespaces[0].OldestZombieAgeSeconds}))
			g.Expect(s.Namespaces[1].Namespace).To(Equal(calm))
			g.Expect(s.Namespaces[1].Health).To(Equal(arbiterv1alpha1.HealthHealthy))
			g.Expect(s.Namespaces[1].Zombies).To(BeEquivalentTo(1))
		}, util.Timeout, util.Interval).Should(Succeed())
	})

	It("an invalid selector: Ready=False/InvalidSelector naming the field, and it governs nothing", func() {
		tenant := newTenant()
		ns := tenantNamespace(tenant)
		createAccount(ns, "alice", 0)
		near := []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}
		badNamespaces := createClusterPolicy("bad-namespaces-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.NamespaceSelector.MatchExpressions = near
		})
		badOperations := createClusterPolicy("bad-operations-"+tenant, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.Selector = &metav1.LabelSelector{MatchExpressions: near}
		})
		for field, p := range map[string]*arbiterv1alpha1.ClusterCleanupPolicy{"spec.namespaceSelector": badNamespaces, "spec.selector": badOperations} {
			Eventually(func(g Gomega) {
				ready := meta.FindStatusCondition(clusterPolicyStatus(p).Conditions, arbiterv1alpha1.PolicyReady)
				g.Expect(ready).NotTo(BeNil())
				g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(ready.Reason).To(Equal(arbiterv1alpha1.ReasonInvalidSelector))
				g.Expect(ready.Message).To(ContainSubstring(field + `: "Near" is not a valid label selector operator`))
			}, util.Timeout, util.Interval).Should(Succeed())
		}
		losers, _ := rejectedOn(ns, "alice", 1, nil)
		Consistently(func() bool { return exists(losers[0]) }, 2*time.Second, util.Interval).Should(BeTrue())
	})

	It("cannot be confused with a CleanupPolicy of the same name", func() {
		tenant := newTenant()
		ns := tenantNamespace(tenant)
		createAccount(ns, "alice", 0)
		name := "same-" + tenant
		createPolicy(ns, name, func(s *arbiterv1alpha1.CleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
			s.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "audit"}}
		})
		cp := createClusterPolicy(name, tenant, func(s *arbiterv1alpha1.ClusterCleanupPolicySpec) {
			s.Strategy = arbiterv1alpha1.CleanupImmediate
		})
		audited, _ := rejectedOn(ns, "alice", 1, map[string]string{"team": "audit"})
		others, _ := rejectedOn(ns, "alice", 2, nil)
		Eventually(func(g Gomega) {
			g.Expect(exists(audited[0]) || exists(others[0]) || exists(others[1])).To(BeFalse())
			g.Expect(policyStatus(&arbiterv1alpha1.CleanupPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}).CleanedTotal).To(BeEquivalentTo(1))
			g.Expect(clusterPolicyStatus(cp).CleanedTotal).To(BeEquivalentTo(2))
		}, util.Timeout, util.Interval).Should(Succeed())
	})
})
