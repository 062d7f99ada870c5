package controllers

import (
	"fmt"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
	"github.com/arbiter-dev/arbiter/test/util"
)

var accountGVK = schema.GroupVersionKind{Group: "bank.example.com", Version: "v1", Kind: "Account"}

var namespaces atomic.Int32

// newNamespace gives each test a namespace of its own.
func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bank-%d", namespaces.Add(1))}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func createAccount(ns, name string, balance int64) {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(accountGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	Expect(unstructured.SetNestedField(u.Object, balance, "spec", "balance")).To(Succeed())
	Expect(unstructured.SetNestedField(u.Object, name, "spec", "owner")).To(Succeed())
	Expect(k8sClient.Create(ctx, u)).To(Succeed())
}

func getAccount(ns, name string) *unstructured.Unstructured {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(accountGVK)
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)).To(Succeed())
	return u
}

func balanceOf(ns, name string) int64 {
	GinkgoHelper()
	b, _, err := unstructured.NestedInt64(getAccount(ns, name).Object, "spec", "balance")
	Expect(err).NotTo(HaveOccurred())
	return b
}

// creditExpression adds params.amount to spec.balance.
const creditExpression = `[JSONPatch{op: "replace", path: "/spec/balance", value: object.spec.balance + params.amount}]`

func accountTarget(name, expression string) arbiterv1alpha1.Target {
	return arbiterv1alpha1.Target{APIVersion: "bank.example.com/v1", Kind: "Account", Name: name, Expression: expression}
}

// operation builds an operation; options adjust it before it is created.
func operation(ns, name string, priority int32, amount int, targets ...arbiterv1alpha1.Target) *arbiterv1alpha1.ConflictResolutionOperation {
	return &arbiterv1alpha1.ConflictResolutionOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: arbiterv1alpha1.ConflictResolutionOperationSpec{
			Function: "credit-account",
			Priority: priority,
			Params:   &apiextensionsv1.JSON{Raw: fmt.Appendf(nil, `{"amount": %d}`, amount)},
			Targets:  targets,
		},
	}
}

func credit(ns, name string, priority int32, amount int, account string) *arbiterv1alpha1.ConflictResolutionOperation {
	return operation(ns, name, priority, amount, accountTarget(account, creditExpression))
}

func duration(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func create(ops ...*arbiterv1alpha1.ConflictResolutionOperation) {
	GinkgoHelper()
	for _, op := range ops {
		Expect(k8sClient.Create(ctx, op)).To(Succeed())
	}
}

func get(op *arbiterv1alpha1.ConflictResolutionOperation) *arbiterv1alpha1.ConflictResolutionOperation {
	GinkgoHelper()
	got := &arbiterv1alpha1.ConflictResolutionOperation{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(op), got)).To(Succeed())
	return got
}

// eventuallyPhase waits for the operation to reach phase and returns it.
func eventuallyPhase(op *arbiterv1alpha1.ConflictResolutionOperation, phase arbiterv1alpha1.OperationPhase) *arbiterv1alpha1.ConflictResolutionOperation {
	GinkgoHelper()
	var got *arbiterv1alpha1.ConflictResolutionOperation
	Eventually(func(g Gomega) {
		got = &arbiterv1alpha1.ConflictResolutionOperation{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(op), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase), "reason %s: %s", got.Status.Reason, got.Status.Message)
	}, util.LongTimeout, util.Interval).Should(Succeed())
	return got
}

// events lists "reason: note" of the events of a type about an operation.
func events(ns, name, eventType string) []string {
	GinkgoHelper()
	var list eventsv1.EventList
	Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Type == eventType {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}
