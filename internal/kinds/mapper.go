// Package kinds maps the kinds operations target to their resources. Any
// user who may create an operation names the kind, so a kind the API
// server does not serve must cost neither a discovery request each time
// nor a wait for everyone else's lookups: the mapper answers from one
// snapshot of discovery and takes a new one at most once per MinRefresh,
// whatever the operations ask for.
package kinds

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/clock"
)

// Defaults for Mapper.
const (
	// DefaultMinRefresh spaces the snapshots a kind the API server does
	// not serve can ask for: at most four a second, each two requests the
	// API server answers from its cached discovery document, whatever
	// tenants name.
	DefaultMinRefresh = 250 * time.Millisecond
	// DefaultMaxAge is how long a snapshot is trusted about the kinds it
	// serves: a kind removed since is seen within this, at the next lookup.
	DefaultMaxAge = time.Minute
)

// NotYetKnownError says that the snapshot is older than the time the
// lookup must see and none may be taken before RetryAfter: the caller
// asks again then rather than conclude the kind is not served.
type NotYetKnownError struct {
	GroupKind  schema.GroupKind
	RetryAfter time.Duration
}

func (e *NotYetKnownError) Error() string {
	return fmt.Sprintf("whether the API server serves %s is not known yet: discovery is due again in %s", e.GroupKind, e.RetryAfter)
}

// Mapper is a RESTMapper over a snapshot of the API server's discovery.
type Mapper struct {
	// Discover takes a snapshot: all groups and resources (with aggregated
	// discovery, two requests).
	Discover func() (meta.RESTMapper, error)
	// Clock tells the snapshots' age; the real clock when nil.
	Clock clock.PassiveClock
	// MinRefresh and MaxAge default to DefaultMinRefresh and DefaultMaxAge.
	MinRefresh, MaxAge time.Duration

	mu sync.Mutex
	// snapshot was taken at taken, a discovery started at tried.
	snapshot     *kindSnapshot
	taken, tried time.Time
	flight       singleflight.Group
}

// kindSnapshot is one discovery's mapper with the mappings found in it so far.
// A discovery mapper walks every group version for each lookup, and every
// operation looks up its targets' kinds more than once; a found mapping is
// the same until the next snapshot. Only found mappings are kept, so what
// tenants name that is not served adds nothing: the kinds the API server
// serves bound it.
type kindSnapshot struct {
	mapper meta.RESTMapper
	found  sync.Map // mappingKey -> *meta.RESTMapping
}

type mappingKey struct {
	gk       schema.GroupKind
	versions string
}

// RESTMapping maps a kind in the snapshot. The mapping returned is shared:
// callers read it and never change it.
func (s *kindSnapshot) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	key := mappingKey{gk, strings.Join(versions, ",")}
	if m, ok := s.found.Load(key); ok {
		return m.(*meta.RESTMapping), nil
	}
	m, err := s.mapper.RESTMapping(gk, versions...)
	if err == nil {
		s.found.Store(key, m)
	}
	return m, err
}

// NewMapper maps kinds from discovery through dc.
func NewMapper(dc discovery.DiscoveryInterface) *Mapper {
	return &Mapper{Discover: func() (meta.RESTMapper, error) {
		groups, err := restmapper.GetAPIGroupResources(dc)
		if err != nil {
			return nil, err
		}
		return restmapper.NewDiscoveryRESTMapper(groups), nil
	}}
}

func (m *Mapper) now() time.Time {
	if m.Clock == nil {
		return time.Now()
	}
	return m.Clock.Now()
}

// RESTMapping maps a kind from the current snapshot, refreshed if it is
// older than MaxAge, or than MinRefresh when the kind is not in it.
func (m *Mapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	return m.RESTMappingSince(time.Time{}, gk, versions...)
}

// RESTMappingSince maps a kind as the API server served it at since or
// later: a kind missing from a snapshot taken before since is looked up in
// a new one, and when none may be taken yet the answer is a
// *NotYetKnownError. Operations pass their creation time, so a kind
// installed just before an operation is found.
func (m *Mapper) RESTMappingSince(since time.Time, gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	// The API server stamps creation times: a manager whose clock lags
	// must not wait for a snapshot it could never take.
	if now := m.now(); since.After(now) {
		since = now
	}
	snapshot, _, err := m.current(m.maxAge())
	if err != nil {
		return nil, err
	}
	mapping, err := snapshot.RESTMapping(gk, versions...)
	if !meta.IsNoMatchError(err) {
		return mapping, err
	}
	// Not served in that snapshot: only a newer one can tell otherwise.
	snapshot, taken, err := m.current(m.minRefresh())
	if err != nil {
		return nil, err
	}
	if mapping, err = snapshot.RESTMapping(gk, versions...); !meta.IsNoMatchError(err) || !taken.Before(since) {
		return mapping, err
	}
	return nil, &NotYetKnownError{GroupKind: gk, RetryAfter: m.untilRefresh()}
}

func (m *Mapper) maxAge() time.Duration {
	if m.MaxAge > 0 {
		return m.MaxAge
	}
	return DefaultMaxAge
}

func (m *Mapper) minRefresh() time.Duration {
	if m.MinRefresh > 0 {
		return m.MinRefresh
	}
	return DefaultMinRefresh
}

// untilRefresh is how long until a snapshot may be taken again.
func (m *Mapper) untilRefresh() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.tried.Add(m.minRefresh()).Sub(m.now()), 0)
}

// current returns a snapshot no older than age if one may be taken (at
// most one per MinRefresh, shared by every caller waiting for it), else the
// one there is.
func (m *Mapper) current(age time.Duration) (*kindSnapshot, time.Time, error) {
	m.mu.Lock()
	now := m.now()
	fresh := m.snapshot != nil && now.Sub(m.taken) < age
	spaced := m.snapshot != nil && now.Sub(m.tried) < m.minRefresh()
	snapshot, taken := m.snapshot, m.taken
	m.mu.Unlock()
	if fresh || spaced {
		return snapshot, taken, nil
	}
	_, err, _ := m.flight.Do("discover", func() (any, error) {
		m.mu.Lock()
		start := m.now()
		if m.snapshot != nil && start.Sub(m.tried) < m.minRefresh() {
			m.mu.Unlock()
			return nil, nil // another caller took one meanwhile
		}
		m.tried = start
		m.mu.Unlock()
		mapper, err := m.Discover()
		if err != nil {
			return nil, fmt.Errorf("discovering the kinds the API server serves: %w", err)
		}
		m.mu.Lock()
		m.snapshot, m.taken = &kindSnapshot{mapper: mapper}, start
		m.mu.Unlock()
		return nil, nil
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snapshot == nil {
		return nil, time.Time{}, err
	}
	// A failed refresh leaves the last snapshot in use.
	return m.snapshot, m.taken, nil
}
