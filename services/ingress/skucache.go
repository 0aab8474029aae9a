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
const skuCacheMax = 100_000

// skuCache is the checkout's in-process view of the catalog: whether a
// SKU's sale is paused and its price, so that the hot path does not read
// PostgreSQL per request. A SKU not yet cached is read at once (one query
// for all the missing SKUs of a checkout); one cached for longer than the
// TTL is served as it is while one background read refreshes every stale
// entry, so at most one query per TTL leaves a process for a hot SKU.
// Admin changes made through this process are put in at once, and those
// made through any process (this one included) are forgotten when their
// SKU note arrives (forget).
type skuCache struct {
	store SKUStore
	ttl   time.Duration
	log   *slog.Logger

	mu         sync.Mutex
	entries    map[uuid.UUID]skuEntry
	refreshing bool
}

// skuEntry is what the cache knows of one SKU: nil sku for one that does
// not exist. A forgotten entry holds nothing and must be read again; it
// stays so that a read started before it was forgotten cannot put back
// what it read (putLocked keeps the newer of the two).
type skuEntry struct {
	sku       *order.SKU
	at        time.Time
	forgotten bool
}

func newSKUCache(store SKUStore, ttl time.Duration, log *slog.Logger) *skuCache {
	return &skuCache{store: store, ttl: ttl, log: log, entries: map[uuid.UUID]skuEntry{}}
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
	var missing []uuid.UUID
	stale := false
	c.mu.Lock()
	for _, id := range ids {
		e, ok := c.entries[id]
		switch {
		case !ok || e.forgotten:
			missing = append(missing, id)
			continue
		case now.Sub(e.at) > c.ttl:
			stale = true
		}
		if e.sku != nil {
			out[id] = e.sku
		}
	}
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
	c.entries[id] = skuEntry{at: time.Now(), forgotten: true}
}

func (c *skuCache) putLocked(id uuid.UUID, s *order.SKU, at time.Time) {
	if e, ok := c.entries[id]; ok && e.at.After(at) {
		return // a newer read or change got there first
	}
	if len(c.entries) >= skuCacheMax {
		clear(c.entries)
	}
	c.entries[id] = skuEntry{sku: s, at: at}
}

// refresh reads every stale SKU again, in one query.
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
		if now.Sub(e.at) > c.ttl {
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
		// Served stale until a read succeeds; the partition checks anyway.
		c.log.Debug("sku cache refresh failed", "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		c.putLocked(id, got[id], now)
	}
}
