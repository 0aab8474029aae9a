package ingress

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// skuCacheTTL is how long the checkout trusts what it read of a SKU before
// it reads it again. A pause or a price change made through this process
// is put in at once; one made through another ingress process arrives as a
// SKU note (natsbus.SKUChangedSubject) that drops the entry at once, and
// the TTL is the backstop for a note lost while NATS was unreachable.
const skuCacheTTL = 250 * time.Millisecond

// skuCacheMax bounds the SKUs the cache holds; past it, it starts over.
// Only SKUs that exist are held, so the catalog bounds it too.
const skuCacheMax = 100_000

// skuMissMax bounds the ids remembered as unknown (the negative cache);
// past it, that memory starts over. Unknown ids cost a client nothing to
// invent, so they never enter the cache proper nor its refresh.
const skuMissMax = 1024

// skuCache is the checkout's in-process view of the catalog: whether a
// SKU's sale is paused and its price, so that the hot path does not read
// PostgreSQL per request. A SKU not yet cached is read at once (one query
// for all the missing SKUs of a checkout). One cached for longer than the
// TTL is served as it is while one background read refreshes the stale
// SKUs that were asked for since they were read, so at most one query per
// TTL leaves a process for a hot SKU, and a SKU nobody asks for costs
// nothing; one older than maxStale (a SKU left alone for a while) is read
// at once again, like a missing one. An id that names no SKU is
// remembered for the TTL in a small negative cache of its own
// (skuMissMax), never refreshed: a flood of made-up ids neither grows the
// cache nor the refresh. Admin changes made through this process are put
// in at once, and those made through any process (this one included) are
// forgotten when their SKU note arrives (forget).
type skuCache struct {
	store    SKUStore
	ttl      time.Duration
	maxStale time.Duration // 4 TTLs
	log      *slog.Logger

	mu         sync.Mutex
	entries    map[uuid.UUID]skuEntry
	misses     map[uuid.UUID]time.Time // unknown ids, when they were read
	refreshing bool
}

// skuEntry is what the cache knows of one SKU that exists. A forgotten
// entry holds nothing and must be read again; it stays so that a read
// started before it was forgotten cannot put back what it read (putLocked
// keeps the newer of the two). A wanted entry was asked for while stale:
// the next refresh reads it.
type skuEntry struct {
	sku       *order.SKU
	at        time.Time
	forgotten bool
	wanted    bool
}

func newSKUCache(store SKUStore, ttl time.Duration, log *slog.Logger) *skuCache {
	return &skuCache{
		store: store, ttl: ttl, maxStale: 4 * ttl, log: log,
		entries: map[uuid.UUID]skuEntry{}, misses: map[uuid.UUID]time.Time{},
	}
}

// get returns the SKUs among ids that exist. The values are shared: do not
// modify them. An error means the catalog could not be read for a SKU the
// cache did not hold.
func (c *skuCache) get(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*order.SKU, error) {
	out := make(map[uuid.UUID]*order.SKU, len(ids))
	if c == nil || c.store == nil {
		return out, nil
	}
	now := time.Now()
	c.mu.Lock()
	missing, stale := c.lookLocked(now, ids, out)
	if stale && !c.refreshing && len(missing) == 0 {
		c.refreshing = true
		go c.refresh()
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := c.store.SKUsByID(ctx, missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range missing {
		s := got[id]
		c.putLocked(id, s, now)
		if s != nil {
			out[id] = s
		}
	}
	return out, nil
}

// lookLocked puts in out the SKUs of ids that the cache can answer, and
// returns the ids it must read at once; stale reports that some of those
// answered are due for a refresh (they are marked wanted). Called with
// c.mu held.
func (c *skuCache) lookLocked(now time.Time, ids []uuid.UUID, out map[uuid.UUID]*order.SKU) (missing []uuid.UUID, stale bool) {
	for _, id := range ids {
		e, ok := c.entries[id]
		age := now.Sub(e.at)
		switch {
		case !ok || e.forgotten:
			if at, known := c.misses[id]; ok || !known || now.Sub(at) > c.ttl {
				missing = append(missing, id)
			}
			continue
		case age > c.maxStale:
			missing = append(missing, id)
			continue
		case age > c.ttl:
			stale = true
			if !e.wanted {
				e.wanted = true
				c.entries[id] = e
			}
		}
		out[id] = e.sku
	}
	return missing, stale
}

// put records a SKU as an admin change left it, at once.
func (c *skuCache) put(s *order.SKU) {
	if c == nil || s == nil {
		return
	}
	cp := *s
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(s.ID, &cp, time.Now())
}

// forget drops what the cache holds of SKU id, because another process
// (or this one) changed it: the next checkout of it reads it again.
func (c *skuCache) forget(id uuid.UUID) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= skuCacheMax {
		clear(c.entries)
	}
	delete(c.misses, id)
	c.entries[id] = skuEntry{at: time.Now(), forgotten: true}
}

// putLocked records what a read at time at found of SKU id: the SKU, or
// nil for none (then id goes to the negative cache only). Called with
// c.mu held.
func (c *skuCache) putLocked(id uuid.UUID, s *order.SKU, at time.Time) {
	e, ok := c.entries[id]
	if ok && e.at.After(at) {
		return // a newer read or change got there first
	}
	if s == nil {
		if ok && !e.forgotten {
			delete(c.entries, id)
		}
		if len(c.misses) >= skuMissMax {
			clear(c.misses)
		}
		c.misses[id] = at
		return
	}
	delete(c.misses, id)
	if len(c.entries) >= skuCacheMax {
		clear(c.entries)
	}
	c.entries[id] = skuEntry{sku: s, at: at}
}

// refresh reads again, in one query, the stale SKUs that were asked for.
func (c *skuCache) refresh() {
	defer func() {
		c.mu.Lock()
		c.refreshing = false
		c.mu.Unlock()
	}()
	now := time.Now()
	var ids []uuid.UUID
	c.mu.Lock()
	for id, e := range c.entries {
		if e.wanted && !e.forgotten && now.Sub(e.at) > c.ttl {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got, err := c.store.SKUsByID(ctx, ids)
	if err != nil {
		// Served stale until a read succeeds (at most maxStale); the
		// partition checks anyway.
		c.log.Debug("sku cache refresh failed", "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		c.putLocked(id, got[id], now)
	}
}
