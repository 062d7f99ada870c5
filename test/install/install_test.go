package install

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/arbiter-dev/arbiter/test/util"
)

// shop is the namespace where alice, an ordinary user with the shipped
// editor roles, submits operations on ConfigMaps (a kind the release's target
// role grants).
const shop = "shop"

var _ = Describe("A release installed with kubectl apply --server-side -f dist/install.yaml", Ordered, func() {
	var aliceKubeconfig string

	alice := func(args ...string) (string, error) { return kubectl(aliceKubeconfig, args...) }
	aliceCreates := func(manifest string) {
		GinkgoHelper()
		_, err := kubectlWithInput(aliceKubeconfig, manifest, "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
	}
	phaseOf := func(name string) string {
		GinkgoHelper()
		out, err := alice("get", "cro", "-n", shop, name, "-o", "jsonpath={.status.phase}/{.status.reason}/{.status.winner}")
		Expect(err).NotTo(HaveOccurred())
		return out
	}
	eventuallyPhase := func(name, want string) {
		GinkgoHelper()
		Eventually(func() string { return phaseOf(name) }, util.LongTimeout, util.Interval).Should(Equal(want))
	}
	configMapData := func(name, key string) string {
		GinkgoHelper()
		var cm corev1.ConfigMap
		Expect(admin.Get(ctx, types.NamespacedName{Namespace: shop, Name: name}, &cm)).To(Succeed())
		return cm.Data[key]
	}
	createConfigMap := func(name string, data map[string]string, immutable bool) {
		GinkgoHelper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: name}, Data: data}
		if immutable {
			cm.Immutable = ptr.To(true)
		}
		Expect(admin.Create(ctx, cm)).To(Succeed())
	}

	BeforeAll(func() {
		Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shop}})).To(Succeed())
		user, err := testEnv.AddUser(envtest.User{Name: "alice"}, nil)
		Expect(err).NotTo(HaveOccurred())
		raw, err := user.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		aliceKubeconfig = filepath.Join(GinkgoT().TempDir(), "alice.kubeconfig")
		Expect(os.WriteFile(aliceKubeconfig, raw, 0o600)).To(Succeed())
		// The release's aggregated editor roles, bound in shop only.
		for _, role := range []string{"arbiter-operation-editor-role", "arbiter-cleanuppolicy-editor-role"} {
			Expect(admin.Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "alice-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}},
			})).To(Succeed())
		}
		// arbiter changes a target only as far as the requester may.
		Expect(util.Grant(ctx, admin, shop, "alice", "", "configmaps", "get", "update")).To(Succeed())
	})

	It("provisions its own serving certificate and injects its CA into both webhook configurations", func() {
		var secret corev1.Secret
		Expect(admin.Get(ctx, types.NamespacedName{Namespace: namespace, Name: certSecret}, &secret)).To(Succeed())
		Expect(secret.Data).To(HaveKey("ca.crt"))
		ca := secret.Data["ca.crt"]

		var mutating admissionregistrationv1.MutatingWebhookConfiguration
		Expect(admin.Get(ctx, types.NamespacedName{Name: mutatingConfig}, &mutating)).To(Succeed())
		Expect(mutating.Webhooks).NotTo(BeEmpty())
		for _, w := range mutating.Webhooks {
			Expect(w.ClientConfig.CABundle).To(Equal(ca), w.Name)
		}
		var validating admissionregistrationv1.ValidatingWebhookConfiguration
		Expect(admin.Get(ctx, types.NamespacedName{Name: validatingCfg}, &validating)).To(Succeed())
		Expect(validating.Webhooks).NotTo(BeEmpty())
		for _, w := range validating.Webhooks {
			Expect(w.ClientConfig.CABundle).To(Equal(ca), w.Name)
		}

		// The manager serves a certificate for the Service's name, signed by that CA.
		pool := x509.NewCertPool()
		Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
		conn, err := tls.Dial("tcp", net.JoinHostPort(hostIP.String(), strconv.Itoa(leader.webhookPort)), &tls.Config{
			RootCAs: pool, ServerName: webhookService + "." + namespace + ".svc", MinVersion: tls.VersionTLS12,
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.Close()).To(Succeed())
	})

	It("admits operations through the shipped webhooks: requestedBy stamped by the mutating one, bad mutations refused by the validating one", func() {
		createConfigMap("probe", map[string]string{"n": "0"}, false)
		aliceCreates(operation("probe", "probe", 5, "Reject", `mergePatch: {data: {n: "1"}}`))
		out, err := alice("get", "cro", "-n", shop, "probe", "-o", "jsonpath={.spec.requestedBy.username}")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(Equal("alice"))
		eventuallyPhase("probe", "Succeeded/Applied/")

		// Only the manager's validating webhook compiles expressions: the
		// schema sees a string.
		_, err = kubectlWithInput(aliceKubeconfig, operation("bad", "probe", 5, "Reject", `expression: '[JSONPatch{op: "replace"'`), "create", "-f", "-")
		Expect(err).To(MatchError(And(ContainSubstring("spec.targets[0].expression"), ContainSubstring("Syntax error"))))
	})

	It("stages two contenders and applies the higher priority one", func() {
		createConfigMap("price", map[string]string{"value": "10"}, false)
		aliceCreates(operation("price-high", "price", 8, "Reject", `mergePatch: {data: {value: "30"}}`) + "---\n" +
			operation("price-low", "price", 3, "Reject", `mergePatch: {data: {value: "20"}}`))
		eventuallyPhase("price-high", "Succeeded/Applied/")
		eventuallyPhase("price-low", "Rejected/LostStaging/price-high")
		Expect(configMapData("price", "value")).To(Equal("30"))
	})

	It("queues contenders with onConflict Queue and applies every one", func() {
		createConfigMap("stock", map[string]string{"count": "0"}, false)
		add := func(name string, priority, amount int) string {
			return operation(name, "stock", priority, "Queue", fmt.Sprintf(
				`expression: '[JSONPatch{op: "replace", path: "/data/count", value: string(int(object.data["count"]) + %d)}]'`, amount))
		}
		aliceCreates(add("stock-a", 7, 1) + "---\n" + add("stock-b", 5, 10) + "---\n" + add("stock-c", 2, 100))
		for _, name := range []string{"stock-a", "stock-b", "stock-c"} {
			eventuallyPhase(name, "Succeeded/Applied/")
		}
		Expect(configMapData("stock", "count")).To(Equal("111"))
	})

	It("rolls back a multi-target operation whose later target refuses the write", func() {
		createConfigMap("ledger", map[string]string{"entry": "open"}, false)
		createConfigMap("sealed", map[string]string{"entry": "open"}, true)
		aliceCreates(`apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: close-books, namespace: shop}
spec:
  function: close-books
  targets:
  - {apiVersion: v1, kind: ConfigMap, name: ledger, mergePatch: {data: {entry: closed}}}
  - {apiVersion: v1, kind: ConfigMap, name: sealed, mergePatch: {data: {entry: closed}}}
`)
		eventuallyPhase("close-books", "Failed/RolledBack/")
		Expect(configMapData("ledger", "entry")).To(Equal("open"))
	})

	It("removes rejected and failed operations under an Immediate CleanupPolicy", func() {
		aliceCreates(`apiVersion: arbiter.dev/v1alpha1
kind: CleanupPolicy
metadata: {name: default, namespace: shop}
spec: {strategy: Immediate}
`)
		Eventually(func(g Gomega) {
			out, err := alice("get", "cro", "-n", shop, "-o", "jsonpath={.items[*].metadata.name}")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(strings.Fields(out)).To(ConsistOf("probe", "price-high", "stock-a", "stock-b", "stock-c"))
		}, util.LongTimeout, util.Interval).Should(Succeed())
	})

	It("serves webhooks from a replica that is not the leader", func() {
		leaseKey := types.NamespacedName{Namespace: namespace, Name: "arbiter.arbiter.dev"}
		holder := func() string {
			GinkgoHelper()
			var lease coordinationv1.Lease
			Expect(admin.Get(ctx, leaseKey, &lease)).To(Succeed())
			return ptr.Deref(lease.Spec.HolderIdentity, "")
		}
		leaderID := holder()
		Expect(leaderID).NotTo(BeEmpty())

		follower := startManager()
		DeferCleanup(follower.stop)
		follower.waitReady()
		Expect(holder()).To(Equal(leaderID), "the first manager still leads")

		// The Service resolves to the follower alone, and the leader is
		// frozen: an admitted operation was admitted by the follower.
		publishWebhookEndpoint(follower)
		Expect(leader.cmd.Process.Signal(syscall.SIGSTOP)).To(Succeed())
		DeferCleanup(func() {
			Expect(leader.cmd.Process.Signal(syscall.SIGCONT)).To(Succeed())
			publishWebhookEndpoint(leader)
		})
		createConfigMap("follower", map[string]string{"n": "0"}, false)
		Eventually(func() (string, error) {
			// An expression: the validating webhook's matchConditions call it.
			return kubectlWithInput(aliceKubeconfig, operation("via-follower", "follower", 5, "Reject", `expression: '[JSONPatch{op: "replace", path: "/data/n", value: "1"}]'`),
				"create", "--dry-run=server", "-f", "-", "-o", "jsonpath={.spec.requestedBy.username}")
		}, util.LongTimeout, util.Interval).Should(Equal("alice"))
		_, err := kubectlWithInput(aliceKubeconfig, operation("bad", "follower", 5, "Reject", `expression: '[JSONPatch{op: "replace"'`), "create", "-f", "-")
		Expect(err).To(MatchError(And(ContainSubstring("spec.targets[0].expression"), ContainSubstring("Syntax error"))))
		Expect(holder()).To(Equal(leaderID), "the follower did not lead while it admitted")
		Expect(follower.log.String()).NotTo(ContainSubstring(" is forbidden: "))
	})

	It("applies dist/requester-policy.yaml where MutatingAdmissionPolicy is served", func() {
		_, err := kubectl(adminKubeconfig, "apply", "--server-side", "-f", policyYAML)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() (string, error) {
			return kubectlWithInput(aliceKubeconfig, operation("stamped", "probe", 5, "Reject", `mergePatch: {data: {n: "2"}}`),
				"create", "--dry-run=server", "-f", "-", "-o", "jsonpath={.spec.requestedBy.username}")
		}, util.Timeout, util.Interval).Should(Equal("alice"))
	})

	It("needed no verb the shipped roles lack", func() {
		Expect(leader.log.String()).NotTo(ContainSubstring(" is forbidden: "))
	})
})

// operation is a one-target operation on ConfigMap target in shop.
func operation(name, target string, priority int, onConflict, mutation string) string {
	return fmt.Sprintf(`apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {name: %s, namespace: shop}
spec:
  function: %s
  priority: %d
  staging: {window: 2s, onConflict: %s}
  targets:
  - apiVersion: v1
    kind: ConfigMap
    name: %s
    %s
`, name, name, priority, onConflict, target, mutation)
}
