package kinds

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/restmapper"
	clocktesting "k8s.io/utils/clock/testing"
)

// fakeDiscovery serves the kinds it is given, counting snapshots.
type fakeDiscovery struct {
	mu     sync.Mutex
	served []schema.GroupVersionKind
	fail   error
	calls  atomic.Int32
	// lookups counts the lookups that reached a snapshot's mapper.
	lookups atomic.Int32
	// gate, when set, holds each snapshot until it is closed; started then
	// receives one value as each snapshot begins.
	gate, started chan struct{}
}

func (d *fakeDiscovery) serve(gvk schema.GroupVersionKind) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.served = append(d.served, gvk)
}

func (d *fakeDiscovery) snapshot() (meta.RESTMapper, error) {
	d.calls.Add(1)
	if d.gate != nil {
		select { // a second snapshot must not hang the test: calls counts it
		case d.started <- struct{}{}:
		default:
		}
		<-d.gate
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return nil, d.fail
	}
	m := meta.NewDefaultRESTMapper(nil)
	for _, gvk := range d.served {
		m.Add(gvk, meta.RESTScopeNamespace)
	}
	return countingMapper{m, &d.lookups}, nil
}

type countingMapper struct {
	meta.RESTMapper
	lookups *atomic.Int32
}

func (c countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	c.lookups.Add(1)
	return c.RESTMapper.RESTMapping(gk, versions...)
}

var (
	configMap = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	account   = schema.GroupVersionKind{Group: "bank.example.com", Version: "v1", Kind: "Account"}
)

func newMapper(d *fakeDiscovery, clk *clocktesting.FakeClock) *Mapper {
	return &Mapper{Discover: d.snapshot, Clock: clk, MinRefresh: time.Second, MaxAge: time.Minute}
}

func mapping(m *Mapper, since time.Time, gvk schema.GroupVersionKind) error {
	_, err := m.RESTMappingSince(since, gvk.GroupKind(), gvk.Version)
	return err
}

func TestServedKindsMapFromOneSnapshotUntilItIsTooOld(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap}}
	m := newMapper(d, clk)
	for range 100 {
		if err := mapping(m, clk.Now(), configMap); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.calls.Load(); got != 1 {
		t.Fatalf("100 lookups of a served kind took %d snapshots, want 1", got)
	}
	clk.Step(time.Minute)
	if err := mapping(m, time.Time{}, configMap); err != nil {
		t.Fatal(err)
	}
	if got := d.calls.Load(); got != 2 {
		t.Fatalf("a lookup after MaxAge took %d snapshots in all, want 2", got)
	}
}

// A found mapping is kept with its snapshot: lookups of a served kind do
// not walk discovery again, and the next snapshot starts afresh, so a kind
// removed since is no longer mapped.
func TestAFoundMappingIsKeptUntilTheNextSnapshot(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap, account}}
	m := newMapper(d, clk)
	for range 100 {
		if err := mapping(m, clk.Now(), account); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.lookups.Load(); got != 1 {
		t.Fatalf("100 lookups of a served kind reached the snapshot's mapper %d times, want 1", got)
	}
	// Another version of a served kind is its own question.
	if _, err := m.RESTMapping(account.GroupKind(), "v2"); !meta.IsNoMatchError(err) {
		t.Fatalf("an unserved version of a served kind: got %v, want a no-match error", err)
	}
	d.mu.Lock()
	d.served = []schema.GroupVersionKind{configMap}
	d.mu.Unlock()
	clk.Step(time.Minute)
	if _, err := m.RESTMapping(account.GroupKind(), account.Version); !meta.IsNoMatchError(err) {
		t.Fatalf("a kind removed before the next snapshot: got %v, want a no-match error", err)
	}
}

// A hostile tenant names a new unserved group in every operation: the
// snapshots stay one per MinRefresh, and each answer is definitive once a
// snapshot newer than the operation says the kind is not served.
func TestUnservedKindsCostOneSnapshotPerMinRefresh(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap}}
	m := newMapper(d, clk)
	created := clk.Now()
	for i := range 1000 {
		ghost := schema.GroupVersionKind{Group: fmt.Sprintf("ghost-%d.example.com", i), Version: "v1", Kind: "Ghost"}
		if err := mapping(m, created, ghost); !meta.IsNoMatchError(err) {
			t.Fatalf("lookup %d: %v, want a no-match error", i, err)
		}
		if i%100 == 0 {
			clk.Step(90 * time.Millisecond)
		}
	}
	if got := d.calls.Load(); got != 1 {
		t.Fatalf("1000 unserved kinds within a second took %d snapshots, want 1", got)
	}
	clk.Step(time.Second)
	if err := mapping(m, created, account); !meta.IsNoMatchError(err) {
		t.Fatalf("%v, want a no-match error", err)
	}
	if got := d.calls.Load(); got != 2 {
		t.Fatalf("an unserved kind after MinRefresh took %d snapshots in all, want 2", got)
	}
}

// A kind installed just before an operation was created is found: a
// snapshot older than the operation cannot say it is not served.
func TestAKindInstalledBeforeTheOperationIsFound(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap}}
	m := newMapper(d, clk)
	if err := mapping(m, clk.Now(), configMap); err != nil {
		t.Fatal(err)
	}
	clk.Step(300 * time.Millisecond)
	d.serve(account)
	created := clk.Now()

	err := mapping(m, created, account)
	var unknown *NotYetKnownError
	if !errors.As(err, &unknown) {
		t.Fatalf("%v, want *NotYetKnownError: the only snapshot predates the operation", err)
	}
	if unknown.RetryAfter != 700*time.Millisecond {
		t.Fatalf("RetryAfter %s, want the 700ms until the next snapshot", unknown.RetryAfter)
	}
	clk.Step(unknown.RetryAfter)
	if err := mapping(m, created, account); err != nil {
		t.Fatalf("after RetryAfter: %v, want the kind found", err)
	}
}

func TestAnOperationStampedAheadOfTheManagersClockIsAnswered(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap}}
	m := newMapper(d, clk)
	ahead := clk.Now().Add(time.Hour)
	if err := mapping(m, ahead, account); !meta.IsNoMatchError(err) {
		t.Fatalf("%v, want a no-match error from a snapshot taken now", err)
	}
}

func TestConcurrentLookupsShareOneSnapshot(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap}, gate: make(chan struct{}), started: make(chan struct{}, 1)}
	m := newMapper(d, clk)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() { errs <- mapping(m, time.Time{}, configMap) })
	}
	<-d.started // one lookup is discovering; the others wait for it
	close(d.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := d.calls.Load(); got != 1 {
		t.Fatalf("50 concurrent lookups took %d snapshots, want 1", got)
	}
}

func TestAFailedDiscoveryKeepsTheLastSnapshot(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{fail: errors.New("connection refused")}
	m := newMapper(d, clk)
	if err := mapping(m, time.Time{}, configMap); err == nil || meta.IsNoMatchError(err) {
		t.Fatalf("%v, want the discovery error: there is no snapshot to answer from", err)
	}
	d.fail = nil
	d.serve(configMap)
	clk.Step(time.Second)
	if err := mapping(m, time.Time{}, configMap); err != nil {
		t.Fatal(err)
	}
	d.fail = errors.New("connection refused")
	clk.Step(time.Minute)
	if err := mapping(m, time.Time{}, configMap); err != nil {
		t.Fatalf("%v, want the last snapshot's answer", err)
	}
}

// A refresh that an unserved kind asked for, however slow the API server
// is, holds up no lookup of a kind the snapshot already has.
func TestAServedKindDoesNotWaitForARefresh(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	d := &fakeDiscovery{served: []schema.GroupVersionKind{configMap}}
	m := newMapper(d, clk)
	if err := mapping(m, time.Time{}, configMap); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Second)
	d.gate, d.started = make(chan struct{}), make(chan struct{}, 1)
	defer close(d.gate)
	refreshing := make(chan error, 1)
	go func() { refreshing <- mapping(m, clk.Now(), account) }()
	<-d.started // the refresh is under way
	if err := mapping(m, time.Time{}, configMap); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refreshing:
		t.Fatalf("the refresh ended before its discovery was let through: %v", err)
	default:
	}
}

// BenchmarkRESTMapping looks up a target's kind in a snapshot the size of a
// small cluster's discovery (60 group versions of 10 kinds each), as every
// operation does more than once.
func BenchmarkRESTMapping(b *testing.B) {
	var groups []*restmapper.APIGroupResources
	for g := range 60 {
		gv := metav1.GroupVersionForDiscovery{GroupVersion: fmt.Sprintf("group%d.example.com/v1", g), Version: "v1"}
		group := &restmapper.APIGroupResources{
			Group:              metav1.APIGroup{Name: fmt.Sprintf("group%d.example.com", g), Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv},
			VersionedResources: map[string][]metav1.APIResource{},
		}
		for k := range 10 {
			group.VersionedResources["v1"] = append(group.VersionedResources["v1"], metav1.APIResource{
				Name: fmt.Sprintf("kind%ds", k), Kind: fmt.Sprintf("Kind%d", k), Namespaced: true})
		}
		groups = append(groups, group)
	}
	m := &Mapper{Discover: func() (meta.RESTMapper, error) { return restmapper.NewDiscoveryRESTMapper(groups), nil }}
	gk := schema.GroupKind{Group: "group59.example.com", Kind: "Kind9"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.RESTMapping(gk, "v1"); err != nil {
			b.Fatal(err)
		}
	}
}
