package controllers

import (
	"testing"
	"time"
)

func TestEventBudgetSpacesOutABurstOfOneOutcome(t *testing.T) {
	var b eventBudget
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	allowed := 0
	for range 1000 {
		if b.allow("team-a", "Failed/TargetNotFound", start) {
			allowed++
		}
	}
	if allowed != outcomeEventBurst {
		t.Errorf("a burst of 1000 identical failures recorded %d events, want %d", allowed, outcomeEventBurst)
	}
	if !b.allow("team-a", "Failed/Timeout", start) {
		t.Error("another outcome in the same namespace was held back by the first one's budget")
	}
	if !b.allow("team-b", "Failed/TargetNotFound", start) {
		t.Error("the same outcome in another namespace was held back by the first one's budget")
	}
	if b.allow("team-a", "Failed/TargetNotFound", start.Add(outcomeEventEvery/2)) {
		t.Error("an event was recorded before the budget refilled")
	}
	if !b.allow("team-a", "Failed/TargetNotFound", start.Add(outcomeEventEvery)) {
		t.Error("no event was recorded once the budget refilled")
	}
}
