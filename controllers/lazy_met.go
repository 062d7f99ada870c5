package controllers

import (
	"container/list"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// metBook holds the met records: the zombies lazy cleanup met due and
// handed to a worker, and when. A record lives from the meeting until a
// worker has acted on it (removed the zombie, or found it not due) or the
// zombie goes. While it lives, the zombie is in the queue or waits there for
// its deletion token, so a further meeting of it adds nothing.
//
// The book holds at most limit records for all namespaces together, and
// shares them: when it is full, a namespace holding its share (limit over
// the namespaces that hold records) or more is refused a record, and its
// zombie waits for a later meeting of its target, as an unmet one does; a
// namespace under its share takes the place of the newest record of the
// namespace holding the most. One bound, whatever tenants do, and no
// namespace under its share loses a record to another's volume. A single
// least-recently-used cache for everyone had the bound but not the second:
// a tenant meeting more due zombies than it holds evicted every other
// namespace's records before a worker reached them.
type metBook struct {
	mu    sync.Mutex
	limit int
	// records are by zombie; each element is a *metEntry in its
	// namespace's list, oldest first.
	records     map[types.NamespacedName]*list.Element
	byNamespace map[string]*list.List
}

// metEntry says when lazy cleanup met a zombie.
type metEntry struct {
	key types.NamespacedName
	uid types.UID
	at  time.Time
}

func newMetBook(limit int) *metBook {
	return &metBook{limit: limit, records: map[types.NamespacedName]*list.Element{}, byNamespace: map[string]*list.List{}}
}

// At returns when the zombie key with uid was met, if it is recorded.
func (b *metBook) At(key types.NamespacedName, uid types.UID) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.records[key]
	if !ok || e.Value.(*metEntry).uid != uid {
		return time.Time{}, false
	}
	return e.Value.(*metEntry).at, true
}

// Add records that the zombie key with uid was met at, and says whether a
// worker must be given it: false when it is recorded already (a worker will
// reach it) or its namespace is refused (see metBook).
func (b *metBook) Add(key types.NamespacedName, uid types.UID, at time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.records[key]; ok {
		m := e.Value.(*metEntry)
		if m.uid == uid {
			return false
		}
		// Another operation of that name: the record is its own now.
		m.uid, m.at = uid, at
		return true
	}
	if len(b.records) >= b.limit && !b.makeRoomFor(key.Namespace) {
		return false
	}
	l, ok := b.byNamespace[key.Namespace]
	if !ok {
		l = list.New()
		b.byNamespace[key.Namespace] = l
	}
	b.records[key] = l.PushBack(&metEntry{key: key, uid: uid, at: at})
	return true
}

// makeRoomFor drops a record for one of namespace when the book is full,
// or says it may not have one; b.mu must be held.
func (b *metBook) makeRoomFor(namespace string) bool {
	holders := len(b.byNamespace)
	held := 0
	if l, ok := b.byNamespace[namespace]; ok {
		held = l.Len()
	} else {
		holders++
	}
	if held*holders >= b.limit {
		return false
	}
	// Under its share while the book is full: some other namespace holds
	// more than its share. The scan is over the namespaces holding
	// records, only when a namespace under its share is met.
	var most *list.List
	for _, l := range b.byNamespace {
		if most == nil || l.Len() > most.Len() {
			most = l
		}
	}
	if most == nil { // a book of no records
		return false
	}
	// Its newest: the one that waits longest for its worker or token.
	b.drop(most.Back())
	return true
}

// Remove drops the record of the zombie key, if any.
func (b *metBook) Remove(key types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.records[key]; ok {
		b.drop(e)
	}
}

// drop removes one record; b.mu must be held.
func (b *metBook) drop(e *list.Element) {
	key := e.Value.(*metEntry).key
	l := b.byNamespace[key.Namespace]
	l.Remove(e)
	if l.Len() == 0 {
		delete(b.byNamespace, key.Namespace)
	}
	delete(b.records, key)
}

// Len is how many records the book holds.
func (b *metBook) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.records)
}
