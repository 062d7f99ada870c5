package v1alpha1

import (
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of ConflictResolutionOperation. The API server applies the same
// values from the CRD's `default:` markers; these hold for an object that
// skipped defaulting (a unit test, an older stored version). A test checks
// the two agree.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultGracePeriod   = time.Second
	DefaultStagingWindow = 100 * time.Millisecond
	DefaultMaxRetries    = 10
	DefaultBaseDelay     = 5 * time.Millisecond
	DefaultBackoffFactor = 1.5
	DefaultMaxDelay      = time.Second
)

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

// TimeoutOrDefault is spec.timeout, or its default.
func (s *ConflictResolutionOperationSpec) TimeoutOrDefault() time.Duration {
	return durationOr(s.Timeout, DefaultTimeout)
}

// GracePeriodOrDefault is spec.gracePeriod, or its default.
func (s *ConflictResolutionOperationSpec) GracePeriodOrDefault() time.Duration {
	return durationOr(s.GracePeriod, DefaultGracePeriod)
}

// WindowOrDefault is spec.staging.window, or its default.
func (s *StagingSpec) WindowOrDefault() time.Duration {
	return durationOr(s.Window, DefaultStagingWindow)
}

// MaxRetriesOrDefault is spec.occ.maxRetries, or its default.
func (s *OCCSpec) MaxRetriesOrDefault() int {
	if s.MaxRetries == nil {
		return DefaultMaxRetries
	}
	return int(*s.MaxRetries)
}

// BaseDelayOrDefault is spec.occ.baseDelay, or its default.
func (s *OCCSpec) BaseDelayOrDefault() time.Duration {
	return durationOr(s.BaseDelay, DefaultBaseDelay)
}

// MaxDelayOrDefault is spec.occ.maxDelay, or its default.
func (s *OCCSpec) MaxDelayOrDefault() time.Duration { return durationOr(s.MaxDelay, DefaultMaxDelay) }

// BackoffFactorOrDefault is spec.occ.backoffFactor, or its default when
// unset or not a number of at least 1.
func (s *OCCSpec) BackoffFactorOrDefault() float64 {
	if f, err := strconv.ParseFloat(s.BackoffFactor, 64); err == nil && f >= 1 {
		return f
	}
	return DefaultBackoffFactor
}

// Deadline is when the operation times out: creation plus its timeout.
func (o *ConflictResolutionOperation) Deadline() time.Time {
	return o.CreationTimestamp.Add(o.Spec.TimeoutOrDefault())
}
