package integration

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// minimalClusterPolicy is the smallest valid cluster cleanup policy: no
// spec, no namespace.
const minimalClusterPolicy = `
apiVersion: arbiter.dev/v1alpha1
kind: ClusterCleanupPolicy
metadata: {generateName: cluster-policy-}
`

func clusterPolicy(patch string) *unstructured.Unstructured {
	return manifest(minimalClusterPolicy, patch)
}

var _ = Describe("The API server, for ClusterCleanupPolicies", func() {
	DescribeTable("refuses an invalid manifest with a message naming the field",
		expectRefused,
		Entry("an unknown strategy", clusterPolicy(`spec: {strategy: Eventually}`),
			"spec.strategy", "Unsupported value"),
		Entry("maxDeletionsPerSecond 0", clusterPolicy(`spec: {maxDeletionsPerSecond: 0}`),
			"spec.maxDeletionsPerSecond", "greater than or equal to 1"),
		Entry("a garbage retention", clusterPolicy(`spec: {retention: "1 day"}`),
			"spec.retention", "should match"),
		Entry("a misspelt namespaceSelector field", clusterPolicy(`spec: {namespaceSelector: {matchLabel: {env: prod}}}`),
			"spec.namespaceSelector.matchLabel", "unknown field"),
	)

	It("accepts a minimal cluster policy, without a namespace, and fills in the CleanupPolicy defaults", func() {
		u := clusterPolicy("")
		Expect(create(u)).To(Succeed())
		DeferCleanup(func() { Expect(k8sClient.Delete(ctx, u)).To(Succeed()) })

		var p arbiterv1alpha1.ClusterCleanupPolicy
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(u), &p)).To(Succeed())
		Expect(p.Namespace).To(BeEmpty())
		Expect(p.Spec.Strategy).To(Equal(arbiterv1alpha1.CleanupDeferred))
		Expect(p.Spec.Phases).To(Equal([]arbiterv1alpha1.ZombiePhase{"Rejected", "Failed"}))
		Expect(p.Spec.MaxDeletionsPerSecond).To(BeEquivalentTo(200))
		Expect(p.Spec.Health.MaxZombieAge).To(Equal(&metav1.Duration{Duration: 24 * time.Hour}))
		Expect(p.Spec.NamespaceSelector).To(BeNil(), "unset: every namespace")
	})
})
