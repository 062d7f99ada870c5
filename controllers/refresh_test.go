package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// A policy's report is refreshed a second after an event, unless its last
// report was costly: then reportSpacing times that cost after.
func TestRefreshDelaySpacesCostlyReports(t *testing.T) {
	cheap, costly, unknown := types.NamespacedName{Namespace: "a", Name: "cheap"},
		types.NamespacedName{Namespace: "a", Name: "costly"}, types.NamespacedName{Namespace: "a", Name: "new"}
	r := &CleanupReconciler{trackers: map[types.NamespacedName]*policyTracker{
		cheap:  {reportCost: 10 * time.Millisecond},
		costly: {reportCost: 300 * time.Millisecond},
	}}
	for _, tc := range []struct {
		policy types.NamespacedName
		want   time.Duration
	}{
		{unknown, policyRefreshDelay},
		{cheap, policyRefreshDelay},
		{costly, 6 * time.Second},
	} {
		if got := r.refreshDelay(tc.policy); got != tc.want {
			t.Errorf("refreshDelay(%s) = %v, want %v", tc.policy, got, tc.want)
		}
	}
}
