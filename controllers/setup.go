package controllers

import (
	"context"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/arbiter-dev/arbiter/internal/metrics"
	"github.com/arbiter-dev/arbiter/internal/registry"
)

// Options configures arbiter's controllers.
type Options struct {
	// OperationWorkers is how many operations are reconciled at once.
	OperationWorkers int
	// CleanupWorkers is how many zombies and policies are reconciled at once.
	CleanupWorkers int
	// DefaultCleanupStrategy governs operations no CleanupPolicy selects
	// (DefaultStrategyNone keeps them).
	DefaultCleanupStrategy string
	// AccessReviewTTL is how long a requester's access answer is reused;
	// zero keeps the default of 10s.
	AccessReviewTTL time.Duration
}

// Setup registers arbiter's field indexes and controllers with mgr, as
// cmd/main.go and the test suites run them.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	if err := registry.Setup(ctx, mgr.GetFieldIndexer()); err != nil {
		return fmt.Errorf("registering the field indexes: %w", err)
	}
	// The zombie, queue and executing gauges read the registry at scrape time.
	metrics.Operations.Read(mgr.GetCache(), mgr.Elected())
	cleaner := NewCleanupReconciler(mgr, o.CleanupWorkers, o.DefaultCleanupStrategy)
	if err := cleaner.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the cleanup controllers: %w", err)
	}
	operations, err := NewOperationReconciler(mgr, o.OperationWorkers)
	if err != nil {
		return err
	}
	operations.Meet = cleaner.MeetTargets
	operations.Authz.TTL = o.AccessReviewTTL
	if err := operations.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the operation controller: %w", err)
	}
	return nil
}
