package controllers

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

const (
	targetWritesPath = "/faults/targets"
	statusWritesPath = "/faults/status"
	deletesPath      = "/faults/deletes"
)

// UndeletableLabel on an operation makes the API server refuse to delete it.
const UndeletableLabel = "test.arbiter.dev/undeletable"

// forever makes an injected fault last until cleared.
const forever = -1

// faultInjector answers the manager's writes the way a hostile world would:
// a target write that meets a 409 Conflict as if another writer got there
// first, or a status write that never lands, as if the manager died right
// after the target write. It recognises an operation's writes by the
// arbiter.dev/applied record the manager puts on the target.
type faultInjector struct {
	mu sync.Mutex
	// conflictsOnApply[uid] is how many more writes applying the operation
	// get a 409 (forever: all of them).
	conflictsOnApply map[string]int
	// conflictsOnRollback holds operations whose rollback writes all get a 409.
	conflictsOnRollback map[string]bool
	// blockSucceeded holds operations whose Succeeded status is refused.
	blockSucceeded map[string]bool
	// allowedBeforeConflicts[uid] is how many more writes applying the
	// operation pass before all others get a 409.
	allowedBeforeConflicts map[string]int
	// applyWrites counts the manager's target writes, by operation UID.
	applyWrites map[string]int
	// conflictsGiven counts the 409s injected, by operation UID.
	conflictsGiven map[string]int
}

func newFaultInjector() *faultInjector {
	return &faultInjector{conflictsOnApply: map[string]int{}, conflictsOnRollback: map[string]bool{}, blockSucceeded: map[string]bool{}, applyWrites: map[string]int{}, allowedBeforeConflicts: map[string]int{}, conflictsGiven: map[string]int{}}
}

func (f *faultInjector) conflictOnApply(uid string, times int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conflictsOnApply[uid] = times
}

// conflictAfter lets the first allowed writes applying uid through, then
// answers every later one with a 409: partial work on a multi-target operation.
func (f *faultInjector) conflictAfter(uid string, allowed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allowedBeforeConflicts[uid] = allowed
}

func (f *faultInjector) conflictOnRollback(uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conflictsOnRollback[uid] = true
}

func (f *faultInjector) refuseSucceeded(uid string, refuse bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blockSucceeded[uid] = refuse
}

func (f *faultInjector) clear(uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conflictsOnApply, uid)
	delete(f.conflictsOnRollback, uid)
	delete(f.blockSucceeded, uid)
	delete(f.allowedBeforeConflicts, uid)
}

func applied(raw []byte) []string {
	u := &unstructured.Unstructured{}
	if len(raw) == 0 || u.UnmarshalJSON(raw) != nil {
		return nil
	}
	v := u.GetAnnotations()[arbiterv1alpha1.AppliedAnnotation]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func conflict() admission.Response {
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed: false,
		Result: &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusConflict, Reason: metav1.StatusReasonConflict,
			Message: "the object has been modified (injected by the test)"},
	}}
}

func (f *faultInjector) handleTargetWrite(_ context.Context, req admission.Request) admission.Response {
	if req.UserInfo.Username != managerUser {
		return admission.Allowed("")
	}
	before, after := applied(req.OldObject.Raw), applied(req.Object.Raw)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, uid := range after {
		if slices.Contains(before, uid) {
			continue
		}
		// This write applies uid.
		if n, ok := f.conflictsOnApply[uid]; ok && n != 0 {
			if n > 0 {
				f.conflictsOnApply[uid] = n - 1
			}
			f.conflictsGiven[uid]++
			return conflict()
		}
		if n, ok := f.allowedBeforeConflicts[uid]; ok {
			if n == 0 {
				return conflict()
			}
			f.allowedBeforeConflicts[uid] = n - 1
		}
		f.applyWrites[uid]++
	}
	for _, uid := range before {
		if !slices.Contains(after, uid) && f.conflictsOnRollback[uid] {
			return conflict()
		}
	}
	return admission.Allowed("")
}

func (f *faultInjector) handleStatusWrite(_ context.Context, req admission.Request) admission.Response {
	op := &arbiterv1alpha1.ConflictResolutionOperation{}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(req.Object.Raw); err != nil {
		return admission.Allowed("")
	}
	phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	op.UID = u.GetUID()
	f.mu.Lock()
	defer f.mu.Unlock()
	if phase == string(arbiterv1alpha1.PhaseSucceeded) && f.blockSucceeded[string(op.UID)] {
		return admission.Denied("the manager is gone before this status write lands (injected by the test)")
	}
	return admission.Allowed("")
}

// conflicts is how many 409s the injector gave writes applying uid.
func (f *faultInjector) conflicts(uid string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conflictsGiven[uid]
}

// writesApplying is how many target writes applying uid the API server admitted.
func (f *faultInjector) writesApplying(uid string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyWrites[uid]
}

func (f *faultInjector) handleDelete(_ context.Context, req admission.Request) admission.Response {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(req.OldObject.Raw); err != nil {
		return admission.Allowed("")
	}
	if u.GetLabels()[UndeletableLabel] == "true" {
		return admission.Denied("this operation may not be deleted (injected by the test)")
	}
	return admission.Allowed("")
}
