package ingress

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// countingSKUs is a SKUStore of fixed SKUs that counts its reads.
type countingSKUs struct {
	SKUStore
	mu    sync.Mutex
	skus  map[uuid.UUID]order.SKU
	reads int
	ids   int // ids looked up, in all reads
	last  int // ids looked up by the last read
}

func (c *countingSKUs) SKUsByID(_ context.Context, ids []uuid.UUID) (map[uuid.UUID]*order.SKU, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	c.ids += len(ids)
	c.last = len(ids)
	out := map[uuid.UUID]*order.SKU{}
	for _, id := range ids {
		if s, ok := c.skus[id]; ok {
			out[id] = &s
		}
	}
	return out, nil
}

func (c *countingSKUs) set(s order.SKU) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skus[s.ID] = s
}

func (c *countingSKUs) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// lookups returns the reads, the ids they looked up, and the ids of the
// last read.
func (c *countingSKUs) lookups() (reads, ids, last int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads, c.ids, c.last
}

// TestSKUCacheMissesStayOut replays the review's flood: 400 previews of 50
// random ids (none exists) then one checkout of a real SKU. The misses
// must not grow the cache nor the refresh: the checkout's refresh looks up
// the SKU it asked for, not the 20,000 ids of the flood.
func TestSKUCacheMissesStayOut(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	store := &countingSKUs{skus: map[uuid.UUID]order.SKU{id: {ID: id, Name: "a", Price: 100}}}
	const ttl = 20 * time.Millisecond
	c := newSKUCache(store, ttl, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	if _, err := c.get(ctx, []uuid.UUID{id}); err != nil {
		t.Fatal(err)
	}
	for range 400 {
		ids := make([]uuid.UUID, 50)
		for i := range ids {
			ids[i] = uuid.New()
		}
		got, err := c.get(ctx, ids)
		if err != nil || len(got) != 0 {
			t.Fatalf("random ids: %v, %v", got, err)
		}
	}
	c.mu.Lock()
	held := len(c.entries) + len(c.misses)
	c.mu.Unlock()
	if held > 1+skuMissMax {
		t.Errorf("the cache holds %d entries after a flood of unknown ids, want at most %d", held, 1+skuMissMax)
	}

	time.Sleep(2 * ttl) // everything is stale
	before, _, _ := store.lookups()
	if got, err := c.get(ctx, []uuid.UUID{id}); err != nil || got[id] == nil {
		t.Fatalf("the real SKU: %v, %v", got, err)
	}
	// The stale SKU is served and one refresh reads it in the background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		reads, _, last := store.lookups()
		if reads > before {
			if last > 1 {
				t.Errorf("one checkout of one SKU made the cache look up %d ids, want 1", last)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no refresh of the stale SKU")
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("after the flood: %d entries held, the refresh read %d id(s)", held, func() int { _, _, l := store.lookups(); return l }())
}

// TestSKUCacheForget checks that a forgotten SKU is read again at the next
// get, and that a read that started before the forget cannot put back what
// it read.
func TestSKUCacheForget(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	store := &countingSKUs{skus: map[uuid.UUID]order.SKU{id: {ID: id, Name: "a", Price: 100}}}
	c := newSKUCache(store, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	get := func() *order.SKU {
		t.Helper()
		got, err := c.get(ctx, []uuid.UUID{id})
		if err != nil {
			t.Fatal(err)
		}
		return got[id]
	}
	if s := get(); s == nil || s.Price != 100 || store.count() != 1 {
		t.Fatalf("first get: %+v after %d reads", s, store.count())
	}
	get()
	if store.count() != 1 {
		t.Fatalf("a cached SKU was read again (%d reads)", store.count())
	}

	// A read that started before the change, and finishes after the note.
	before := time.Now()
	store.set(order.SKU{ID: id, Name: "a", Price: 200, Paused: true})
	c.forget(id)
	c.mu.Lock()
	c.putLocked(id, &order.SKU{ID: id, Name: "a", Price: 100}, before)
	c.mu.Unlock()

	if s := get(); s == nil || s.Price != 200 || !s.Paused || store.count() != 2 {
		t.Fatalf("after forget: %+v after %d reads, want the new price and paused read once more", s, store.count())
	}
	get()
	if store.count() != 2 {
		t.Fatalf("read again after the forgotten SKU was cached (%d reads)", store.count())
	}
	var nilCache *skuCache
	nilCache.forget(id) // harmless
}

// TestSKUCacheNotesAcrossIngress runs two ingress servers on one database
// and one NATS server, as two processes: a pause, a resume and a PATCH made
// through one reach the other's SKU cache at once through the SKU notes.
// Both caches have a TTL of an hour, so nothing but a note can refresh
// them; a third server without the notes still sees the old SKU.
func TestSKUCacheNotesAcrossIngress(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var notesA *natsbus.SKUNotes
	a := newOrderEnv(t, func(e *orderEnv, cfg *Config, d *Deps) {
		cfg.PublishTimeout = 10 * time.Second
		d.SKUAdmin = d.SKUs.(SKUAdminStore)
		notesA = natsbus.NewSKUNotes(e.NC, log)
		d.SKUNotes = notesA
	})
	subscribe := func(notes *natsbus.SKUNotes, s *Server) {
		t.Helper()
		sub, err := notes.Subscribe(s.SKUChanged)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	subscribe(notesA, a.Server)
	a.Server.skus = newSKUCache(a.DB, time.Hour, log)

	// b: another process, with its own NATS connection.
	nc, err := nats.Connect(a.NATS.ClientURL(), nats.Name("ingress-b"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	newServer := func(notes SKUNotifier) *Server {
		d := a.Server.Deps
		d.Registry = prometheus.NewRegistry()
		d.SKUNotes = notes
		s := New(a.Server.cfg, d)
		s.skus = newSKUCache(a.DB, time.Hour, log)
		return s
	}
	notesB := natsbus.NewSKUNotes(nc, log)
	b := newServer(notesB)
	subscribe(notesB, b)
	hb := httptest.NewServer(b.Handler())
	t.Cleanup(hb.Close)
	c := newServer(nil) // no notes: only its TTL would refresh it

	sku := a.createSKU(t, newSKU("Sneaker", 12900, 100))
	ctx := context.Background()
	cached := func(s *Server) *order.SKU {
		t.Helper()
		got, err := s.skus.get(ctx, []uuid.UUID{sku.ID})
		if err != nil {
			t.Fatal(err)
		}
		return got[sku.ID]
	}
	for _, s := range []*Server{a.Server, b, c} {
		if got := cached(s); got == nil || got.Paused {
			t.Fatalf("cached %+v, want the SKU on sale", got)
		}
	}
	// waitFor polls b's cache (no TTL refresh can happen: an hour).
	waitFor := func(what string, ok func(*order.SKU) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(cached(b)) {
			if time.Now().After(deadline) {
				t.Fatalf("ingress b's cache never saw %s: %+v", what, cached(b))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	admin := a.adminToken(t)
	buyer := a.newBuyer(t)
	checkoutB := func() (*http.Response, []byte) {
		t.Helper()
		te := *a.testEnv
		te.URL = hb.URL
		bo := *a
		bo.testEnv = &te
		return bo.checkout(t, buyer, directBody(buyer, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	}

	a.mustDo(t, "POST", "/v1/skus/"+sku.ID.String()+"/pause", admin, nil, http.StatusOK, nil)
	waitFor("the pause", func(s *order.SKU) bool { return s != nil && s.Paused })
	resp, body := checkoutB()
	if p := wantProblem(t, resp, body, http.StatusConflict); !strings.HasSuffix(p.Type, "sale-paused") {
		t.Errorf("checkout through b while paused: problem type %q, want sale-paused", p.Type)
	}

	a.mustDo(t, "POST", "/v1/skus/"+sku.ID.String()+"/resume", admin, nil, http.StatusOK, nil)
	waitFor("the resume", func(s *order.SKU) bool { return s != nil && !s.Paused })
	if resp, body := checkoutB(); resp.StatusCode != http.StatusAccepted {
		t.Errorf("checkout through b after the resume: status %d: %s", resp.StatusCode, body)
	}

	resp, body = a.doHeaders(t, "PATCH", "/v1/skus/"+sku.ID.String(), admin, `{"price":9900}`,
		http.Header{"Content-Type": {"application/merge-patch+json"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH: status %d: %s", resp.StatusCode, body)
	}
	waitFor("the new price", func(s *order.SKU) bool { return s != nil && s.Price == 9900 })

	// The control: without the notes, the old SKU stays for the TTL.
	if got := cached(c); got == nil || got.Price != 12900 || got.Paused {
		t.Errorf("the server without notes cached %+v, want the SKU as first read", got)
	}
}
