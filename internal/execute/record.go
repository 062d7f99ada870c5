package execute

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// appliedHistory bounds the arbiter.dev/applied record on a target: enough
// to recognise every operation that can still be executing or recovering,
// small enough to keep the target lean.
const appliedHistory = 32

// appliedUIDs reads a target's arbiter.dev/applied record, oldest first.
func appliedUIDs(obj *unstructured.Unstructured) []string {
	v := obj.GetAnnotations()[arbiterv1alpha1.AppliedAnnotation]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// WasApplied reports whether the target records the operation as applied.
func WasApplied(obj *unstructured.Unstructured, uid string) bool {
	return slices.Contains(appliedUIDs(obj), uid)
}

// recordApplied adds uid to the record, dropping the oldest beyond
// appliedHistory. It goes into the same update that applies the operation,
// so the record and the change land together or not at all.
func recordApplied(obj *unstructured.Unstructured, uid string) {
	uids := slices.DeleteFunc(appliedUIDs(obj), func(u string) bool { return u == uid })
	uids = append(uids, uid)
	if len(uids) > appliedHistory {
		uids = uids[len(uids)-appliedHistory:]
	}
	setRecord(obj, uids)
}

// forgetApplied removes uid from the record, in the update that rolls the
// operation back.
func forgetApplied(obj *unstructured.Unstructured, uid string) {
	setRecord(obj, slices.DeleteFunc(appliedUIDs(obj), func(u string) bool { return u == uid }))
}

func setRecord(obj *unstructured.Unstructured, uids []string) {
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	if len(uids) == 0 {
		delete(ann, arbiterv1alpha1.AppliedAnnotation)
	} else {
		ann[arbiterv1alpha1.AppliedAnnotation] = strings.Join(uids, ",")
	}
	if len(ann) == 0 {
		ann = nil
	}
	obj.SetAnnotations(ann)
}
