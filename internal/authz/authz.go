// Package authz answers whether an operation's requester may do to a target
// what the operation asks arbiter to do: arbiter must never be a confused
// deputy that changes, for anyone allowed to create an operation, whatever
// the operator itself may change.
package authz

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"

	arbiterv1alpha1 "github.com/arbiter-dev/arbiter/api/v1alpha1"
)

// Verbs an operation needs on each target: arbiter reads it, then updates it.
var Verbs = []string{"get", "update"}

// decisionTTL is how long an answer is reused: a storm of operations from
// one requester in one namespace costs one review per verb, and a revoked
// permission takes effect within it.
const decisionTTL = 10 * time.Second

// Denied is a requester who may not do something to a target.
type Denied struct {
	Message string
}

func (d *Denied) Error() string { return d.Message }

// Checker runs SubjectAccessReviews as an operation's requester.
type Checker struct {
	Client client.Client
	Mapper interface {
		RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error)
	}
	// TTL is how long an answer is reused; decisionTTL when zero.
	TTL time.Duration
	// Clock tells the answers' age; the real clock when nil.
	Clock clock.PassiveClock

	once     sync.Once
	answers  *lru.Cache
	inflight singleflight.Group
}

// answersKept bounds the answers reused: the least recently used go first.
const answersKept = 10000

type cached struct {
	allowed bool
	reason  string
	at      time.Time
}

// Check returns nil when the requester may get and update every target, a
// *Denied naming the first verb and target refused, or an error when the
// review could not be made (a kind the API server does not serve among them).
func (c *Checker) Check(ctx context.Context, op *arbiterv1alpha1.ConflictResolutionOperation) error {
	who := op.Spec.RequestedBy
	if who == nil || who.Username == "" {
		return &Denied{Message: "spec.requestedBy is not set, so arbiter cannot act for anyone (fail closed); " +
			"arbiter's mutating webhook stamps it at creation (and the arbiter-requested-by MutatingAdmissionPolicy, where served): " +
			"is the arbiter-mutating-webhook-configuration installed?"}
	}
	for _, t := range op.Spec.Targets {
		gv, err := schema.ParseGroupVersion(t.APIVersion)
		if err != nil {
			return fmt.Errorf("target apiVersion %q: %w", t.APIVersion, err)
		}
		mapping, err := c.Mapper.RESTMapping(gv.WithKind(t.Kind).GroupKind(), gv.Version)
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", t.Kind, op.Namespace, t.Name, err)
		}
		for _, verb := range Verbs {
			attrs := authorizationv1.ResourceAttributes{Namespace: op.Namespace, Verb: verb,
				Group: mapping.Resource.Group, Version: mapping.Resource.Version, Resource: mapping.Resource.Resource}
			// First for every object of the kind in the namespace: one answer
			// covers every target of a requester's storm. Only a refusal
			// there asks about the one object, which a role limited to
			// resourceNames may still allow.
			allowed, reason, err := c.review(ctx, who, attrs)
			if err == nil && !allowed {
				attrs.Name = t.Name
				allowed, reason, err = c.review(ctx, who, attrs)
			}
			if err != nil {
				return err
			}
			if !allowed {
				msg := fmt.Sprintf("User %q may not %s %s %s/%s", who.Username, verb, t.Kind, op.Namespace, t.Name)
				if reason != "" {
					msg += ": " + reason
				}
				return &Denied{Message: msg}
			}
		}
	}
	return nil
}

// questionKey names a review's question in the cache: the whole requester
// and the attributes, JSON-encoded so that no two questions share a key
// (groups ["a,b"] and ["a", "b"] are two requesters; LDAP group names hold
// commas).
func questionKey(who *arbiterv1alpha1.RequesterInfo, attrs authorizationv1.ResourceAttributes) (string, error) {
	groups := slices.Clone(who.Groups)
	slices.Sort(groups)
	key, err := json.Marshal([]any{who.Username, who.UID, groups, who.Extra,
		attrs.Verb, attrs.Group, attrs.Resource, attrs.Namespace, attrs.Name})
	if err != nil {
		return "", fmt.Errorf("encoding the access question: %w", err)
	}
	return string(key), nil
}

func (c *Checker) review(ctx context.Context, who *arbiterv1alpha1.RequesterInfo, attrs authorizationv1.ResourceAttributes) (bool, string, error) {
	key, err := questionKey(who, attrs)
	if err != nil {
		return false, "", err
	}
	c.once.Do(func() { c.answers = lru.New(answersKept) })
	now := time.Now()
	if c.Clock != nil {
		now = c.Clock.Now()
	}
	if d, ok := c.fresh(key, now); ok {
		return d.allowed, d.reason, nil
	}

	// Concurrent reconciles asking the same question share one review.
	a, err, _ := c.inflight.Do(key, func() (any, error) {
		// A flight that ended just before this one began left its answer.
		if d, ok := c.fresh(key, now); ok {
			return d, nil
		}
		extra := make(map[string]authorizationv1.ExtraValue, len(who.Extra))
		for k, v := range who.Extra {
			extra[k] = v
		}
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: who.Username, UID: who.UID, Groups: who.Groups, Extra: extra, ResourceAttributes: &attrs,
		}}
		if err := c.Client.Create(ctx, sar); err != nil {
			return nil, fmt.Errorf("reviewing %s %s/%s for %s: %w", attrs.Verb, attrs.Resource, attrs.Name, who.Username, err)
		}
		answer := cached{allowed: sar.Status.Allowed, reason: sar.Status.Reason, at: now}
		c.answers.Add(key, answer)
		return answer, nil
	})
	if err != nil {
		return false, "", err
	}
	return a.(cached).allowed, a.(cached).reason, nil
}

// fresh is the answer to key if one younger than the TTL is kept.
func (c *Checker) fresh(key string, now time.Time) (cached, bool) {
	if d, ok := c.answers.Get(key); ok && now.Sub(d.(cached).at) < cmp.Or(c.TTL, decisionTTL) {
		return d.(cached), true
	}
	return cached{}, false
}
