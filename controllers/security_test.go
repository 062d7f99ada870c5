package controllers

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// userClient is a client authenticated as a user with no group but
// system:authenticated, whose rights come only from the roles bound below.
func userClient(name string) client.Client {
	GinkgoHelper()
	u, err := testEnv.AddUser(envtest.User{Name: name}, testEnv.Config)
	Expect(err).NotTo(HaveOccurred())
	c, err := client.New(u.Config(), client.Options{Scheme: testScheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// grant binds a user to a role in ns allowing verbs on resources of group.
func grant(ns, user, group, resource string, verbs ...string) {
	GinkgoHelper()
	Expect(util.Grant(ctx, k8sClient, ns, user, group, resource, verbs...)).To(Succeed())
}

var _ = Describe("Security", func() {
	var ns string
	var mallory, pat client.Client

	BeforeEach(func() {
		ns = newNamespace()
		createAccount(ns, "alice", 100)
		// Both may create operations and read accounts; only pat may update them.
		for _, user := range []string{"mallory", "pat"} {
			grant(ns, user, arbiterv1alpha1.GroupVersion.Group, "conflictresolutionoperations", "create", "get", "list", "watch")
			grant(ns, user, "bank.example.com", "accounts", "get")
		}
		grant(ns, "pat", "bank.example.com", "accounts", "update")
		mallory, pat = userClient("mallory"), userClient("pat")
	})

	It("fails an operation whose requester may not update the target, even with a forged requestedBy, and writes nothing", func() {
		rv := getAccount(ns, "alice").GetResourceVersion()
		op := credit(ns, "forged", 5, 1000, "alice")
		op.Spec.RequestedBy = &arbiterv1alpha1.RequesterInfo{Username: "admin", Groups: []string{"system:masters"}}
		Expect(mallory.Create(ctx, op)).To(Succeed())

		got := eventuallyPhase(op, arbiterv1alpha1.PhaseFailed)
		Expect(got.Spec.RequestedBy.Username).To(Equal("mallory"), "the manifest's requestedBy is overwritten at admission")
		Expect(got.Spec.RequestedBy.Groups).NotTo(ContainElement("system:masters"))
		Expect(got.Status.Reason).To(Equal(arbiterv1alpha1.ReasonForbidden))
		Expect(got.Status.Message).To(ContainSubstring(`User "mallory" may not update Account ` + ns + "/alice"))
		Expect(getAccount(ns, "alice").GetResourceVersion()).To(Equal(rv))
	})

	It("does not let a forbidden high-priority operation reject a permitted one in the same window", func() {
		weapon := credit(ns, "weapon", arbiterv1alpha1.PriorityCritical, 1000, "alice")
		legit := credit(ns, "legit", arbiterv1alpha1.PriorityBackground, 1, "alice")
		for _, op := range []*arbiterv1alpha1.ConflictResolutionOperation{weapon, legit} {
			op.Spec.Staging.Window = duration(2 * time.Second)
		}
		Expect(mallory.Create(ctx, weapon)).To(Succeed())
		Expect(pat.Create(ctx, legit)).To(Succeed())

		Expect(eventuallyPhase(weapon, arbiterv1alpha1.PhaseFailed).Status.Reason).To(Equal(arbiterv1alpha1.ReasonForbidden))
		won := eventuallyPhase(legit, arbiterv1alpha1.PhaseSucceeded)
		Expect(won.Spec.RequestedBy.Username).To(Equal("pat"))
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(101))
	})

	It("lets a permitted requester's operation succeed", func() {
		op := credit(ns, "permitted", 5, 7, "alice")
		Expect(pat.Create(ctx, op)).To(Succeed())
		eventuallyPhase(op, arbiterv1alpha1.PhaseSucceeded)
		Expect(balanceOf(ns, "alice")).To(BeEquivalentTo(107))
	})

	It("never lets requestedBy change after create", func() {
		op := credit(ns, "fixed", 5, 1, "alice")
		Expect(pat.Create(ctx, op)).To(Succeed())
		got := get(op)
		got.Spec.RequestedBy.Username = "admin"
		err := k8sClient.Update(ctx, got)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec is immutable"))
	})
})

var _ = Describe("The operator's RBAC", func() {
	It("grants no wildcard", func() {
		files, err := filepath.Glob(util.Path("config", "rbac", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())
		checked := 0
		for _, f := range files {
			raw, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(raw)), 4096)
			for {
				var role rbacv1.ClusterRole
				if err := dec.Decode(&role); err != nil {
					break
				}
				for _, rule := range role.Rules {
					checked++
					for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames, rule.NonResourceURLs} {
						Expect(list).NotTo(ContainElement(ContainSubstring("*")), "%s: role %s: %+v", filepath.Base(f), role.Name, rule)
					}
				}
			}
		}
		Expect(checked).To(BeNumerically(">", 5), "the role files were read")
	})
})
