package e2e

import (
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

// The requestedBy stamping must not depend on the MutatingAdmissionPolicy,
// which some clusters do not serve: these specs take it away and show that
// the manager's own webhooks keep anyone from acting as someone else.
var _ = Describe("requestedBy without the MutatingAdmissionPolicy", Label("requester"), Ordered, func() {
	const ns = "requester"
	var (
		pat, mallory         client.Client
		patInfo, malloryInfo *arbiterv1alpha1.RequesterInfo
		settings             *corev1.ConfigMap
	)
	// forged claims the most powerful identity there is.
	forged := func() *arbiterv1alpha1.RequesterInfo {
		return &arbiterv1alpha1.RequesterInfo{Username: "alice", UID: "alice-uid", Groups: []string{"system:masters"},
			Extra: map[string][]string{"scopes": {"everything"}}}
	}
	operation := func(name, mode string, by *arbiterv1alpha1.RequesterInfo) *arbiterv1alpha1.ConflictResolutionOperation {
		return &arbiterv1alpha1.ConflictResolutionOperation{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
				Function:    "set-mode",
				RequestedBy: by,
				Targets: []arbiterv1alpha1.Target{{APIVersion: "v1", Kind: "ConfigMap", Name: "settings",
					MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"data":{"mode":"` + mode + `"}}`)}}},
			},
		}
	}
	stored := func(name string) *arbiterv1alpha1.ConflictResolutionOperation {
		GinkgoHelper()
		op := &arbiterv1alpha1.ConflictResolutionOperation{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, op)).To(Succeed())
		return op
	}
	expectNotStored := func(name string) {
		GinkgoHelper()
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &arbiterv1alpha1.ConflictResolutionOperation{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "expected NotFound, got %v", err)
	}

	BeforeAll(func() {
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		settings = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"mode": "calm"}}
		Expect(k8sClient.Create(ctx, settings)).To(Succeed())
		// Both may create and read operations; only pat may change the
		// ConfigMap. mallory may not even read it.
		for _, user := range []string{"pat", "mallory"} {
			bind(ns, user, arbiterv1alpha1.GroupVersion.Group, "conflictresolutionoperations", "create", "get", "list", "watch")
		}
		bind(ns, "pat", "", "configmaps", "get", "update")
		pat, patInfo = impersonate(rest.ImpersonationConfig{UserName: "pat"})
		mallory, malloryInfo = impersonate(rest.ImpersonationConfig{UserName: "mallory", UID: "mallory-uid",
			Groups: []string{"team-a"}, Extra: map[string][]string{"scopes": {"operations"}}})

		for _, obj := range []client.Object{
			&admissionregistrationv1.MutatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "requested-by"}},
			&admissionregistrationv1.MutatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "requested-by"}},
		} {
			Expect(k8sClient.Delete(ctx, obj)).To(Succeed())
		}
		DeferCleanup(func() { Expect(util.InstallAdmission(ctx, k8sClient)).To(Succeed()) })
	})

	It("refuses, naming spec.requestedBy, every create that nothing stamped", func() {
		// Take the mutating webhook away too. Nothing stamps then, which is
		// how to know the API server has dropped the policy: from then on the
		// validating webhook refuses a forged requestedBy.
		hooks := &admissionregistrationv1.MutatingWebhookConfiguration{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, hooks)).To(Succeed())
		Expect(k8sClient.Delete(ctx, hooks)).To(Succeed())
		DeferCleanup(func() {
			hooks.ResourceVersion, hooks.UID = "", ""
			Expect(k8sClient.Create(ctx, hooks)).To(Succeed())
		})
		Eventually(func(g Gomega) {
			err := mallory.Create(ctx, operation("probe", "forged", forged()), client.DryRunAll)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(`spec.requestedBy: Invalid value: "alice"`))
		}, util.Timeout, util.Interval).Should(Succeed())

		err := mallory.Create(ctx, operation("forged-unstamped", "forged", forged()))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
		Expect(err.Error()).To(And(ContainSubstring(`spec.requestedBy: Invalid value: "alice"`), ContainSubstring(`"mallory"`)))
		expectNotStored("forged-unstamped")

		// Fail closed for honest users too: unstamped is never stored.
		err = pat.Create(ctx, operation("honest-unstamped", "pat", nil))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.requestedBy: Required value"))
		expectNotStored("honest-unstamped")
	})

	It("stamps an honest operation with its requester, and it succeeds", func() {
		// The mutating webhook is back; wait until the API server calls it.
		Eventually(func(g Gomega) {
			op := operation("probe", "pat", nil)
			g.Expect(pat.Create(ctx, op, client.DryRunAll)).To(Succeed())
			g.Expect(op.Spec.RequestedBy).To(Equal(patInfo))
		}, util.Timeout, util.Interval).Should(Succeed())

		Expect(pat.Create(ctx, operation("honest", "pat", nil))).To(Succeed())
		Expect(stored("honest").Spec.RequestedBy).To(Equal(patInfo))
		expectPhase(ns, "honest", arbiterv1alpha1.PhaseSucceeded, arbiterv1alpha1.ReasonApplied)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(settings), settings)).To(Succeed())
		Expect(settings.Data).To(HaveKeyWithValue("mode", "pat"))
	})

	It("replaces a forged requestedBy with the real requester, who may not write the target: Failed/Forbidden, target unchanged", func() {
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(settings), settings)).To(Succeed())
		before := settings.ResourceVersion

		Expect(mallory.Create(ctx, operation("forged", "mallory", forged()))).To(Succeed())
		got := stored("forged")
		Expect(got.Spec.RequestedBy).To(Equal(malloryInfo), "uid, groups and extra come from authentication too")
		Expect(got.Spec.RequestedBy.Groups).NotTo(ContainElement("system:masters"))
		expectPhase(ns, "forged", arbiterv1alpha1.PhaseFailed, arbiterv1alpha1.ReasonForbidden)
		Expect(stored("forged").Status.Message).To(ContainSubstring(`"mallory"`))

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(settings), settings)).To(Succeed())
		Expect(settings.ResourceVersion).To(Equal(before), "nothing was written to the target")
		Expect(settings.Data).To(HaveKeyWithValue("mode", "pat"))
	})
})

var _ = Describe("config/default's webhook certificate", Label("requester"), func() {
	It("is issued by the rendered Issuer and trusted by both webhook configurations", func() {
		rendered, err := kubectl("kustomize", "config/default")
		Expect(err).NotTo(HaveOccurred())
		var issuers, issuerRefs []string
		injected := map[string]string{}
		for doc := range strings.SplitSeq(rendered, "\n---\n") {
			var obj struct {
				Kind     string            `json:"kind"`
				Metadata metav1.ObjectMeta `json:"metadata"`
				Spec     struct {
					IssuerRef struct {
						Name string `json:"name"`
					} `json:"issuerRef"`
				} `json:"spec"`
			}
			Expect(yaml.Unmarshal([]byte(doc), &obj)).To(Succeed())
			switch obj.Kind {
			case "Issuer":
				issuers = append(issuers, obj.Metadata.Name)
			case "Certificate":
				issuerRefs = append(issuerRefs, obj.Spec.IssuerRef.Name)
			case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
				injected[obj.Kind] = obj.Metadata.Annotations["cert-manager.io/inject-ca-from"]
			}
		}
		Expect(issuers).To(Equal([]string{"arbiter-selfsigned-issuer"}))
		Expect(issuerRefs).To(Equal(issuers), "the Certificate names the Issuer as kustomize renamed it")
		Expect(injected).To(Equal(map[string]string{
			"MutatingWebhookConfiguration":   "arbiter-system/arbiter-serving-cert",
			"ValidatingWebhookConfiguration": "arbiter-system/arbiter-serving-cert",
		}))
	})
})

// bind gives user verbs on resource of group in ns, and nothing else.
func bind(ns, user, group, resource string, verbs ...string) {
	GinkgoHelper()
	Expect(util.Grant(ctx, k8sClient, ns, user, group, resource, verbs...)).To(Succeed())
}

// impersonate is a client acting as the user who, and that user as the API
// server authenticates it (a SelfSubjectReview), as arbiter must record it.
func impersonate(who rest.ImpersonationConfig) (client.Client, *arbiterv1alpha1.RequesterInfo) {
	GinkgoHelper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = who
	cl, err := client.New(c, client.Options{Scheme: k8sClient.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	review := &authenticationv1.SelfSubjectReview{}
	Expect(cl.Create(ctx, review)).To(Succeed())
	u := review.Status.UserInfo
	Expect(u.Username).To(Equal(who.UserName))
	info := &arbiterv1alpha1.RequesterInfo{Username: u.Username, UID: u.UID}
	if len(u.Groups) > 0 {
		info.Groups = slices.Clone(u.Groups)
	}
	if len(u.Extra) > 0 {
		info.Extra = map[string][]string{}
		for k, v := range u.Extra {
			info.Extra[k] = slices.Clone([]string(v))
		}
	}
	return cl, info
}

// Every webhook call is a round trip the API server pays for on each create.
// These specs hold the webhooks to what only they can do.
var _ = Describe("Admission webhook calls", Label("requester"), func() {
	const (
		mutatePath   = "/mutate-arbiter-dev-v1alpha1-conflictresolutionoperation"
		validatePath = "/validate-arbiter-dev-v1alpha1-conflictresolutionoperation"
	)
	calls := func(path string) float64 {
		return manager.sum("controller_runtime_webhook_requests_total", `webhook="`+path+`"`)
	}
	operation := func(name string, target arbiterv1alpha1.Target) *arbiterv1alpha1.ConflictResolutionOperation {
		return &arbiterv1alpha1.ConflictResolutionOperation{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       arbiterv1alpha1.ConflictResolutionOperationSpec{Function: "webhook-calls", Targets: []arbiterv1alpha1.Target{target}},
		}
	}
	mergePatch := arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "webhook-calls",
		MergePatch: &apiextensionsv1.JSON{Raw: []byte(`{"data":{"mode":"merge"}}`)}}
	expression := arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "webhook-calls",
		Expression: `[JSONPatch{op: "add", path: "/data/mode", value: "cel"}]`}

	It("skips the stamper where the admission policy stamped, and the validator where the schema checks everything", func() {
		// Once the requested-by policy acts (another spec takes it away for
		// a while), it stamps before the webhooks run, and the stamper is
		// not called.
		Eventually(func(g Gomega) {
			before := calls(mutatePath)
			op := operation("probe", mergePatch)
			g.Expect(k8sClient.Create(ctx, op, client.DryRunAll)).To(Succeed())
			g.Expect(op.Spec.RequestedBy).NotTo(BeNil())
			g.Expect(calls(mutatePath)).To(Equal(before), "the stamper was called for an operation the policy stamped")
		}, util.Timeout, util.Interval).Should(Succeed())

		mutations, validations := calls(mutatePath), calls(validatePath)
		merge := operation("merge-patch", mergePatch)
		Expect(k8sClient.Create(ctx, merge)).To(Succeed())
		Expect(merge.Spec.RequestedBy).NotTo(BeNil())
		Expect(calls(mutatePath)).To(Equal(mutations))
		Expect(calls(validatePath)).To(Equal(validations), "a merge patch by a stamped requester has nothing for the validator")

		cel := operation("expression", expression)
		Expect(k8sClient.Create(ctx, cel)).To(Succeed())
		Expect(calls(mutatePath)).To(Equal(mutations))
		Expect(calls(validatePath)).To(Equal(validations+1), "a CEL expression must be compiled by the validator")

		// The validator still sees what only it can refuse.
		bad := operation("bad-expression", arbiterv1alpha1.Target{APIVersion: "v1", Kind: "ConfigMap", Name: "webhook-calls", Expression: "[JSONPatch{"})
		err := k8sClient.Create(ctx, bad)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.targets[0].expression"))
		for _, op := range []client.Object{merge, cel} {
			Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, op))).To(Succeed())
		}
	})
})
