package ingress

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/postgres"
)

// writeRoute is a write route (or the preview) and a request to it that
// needs nothing to exist.
type writeRoute struct {
	method, path string
	body         any
	admin        bool
}

// writeRoutes are every route that writes, and the preview: each must take
// from the caller's token bucket.
func writeRoutes() []writeRoute {
	id := uuid.NewString()
	return []writeRoute{
		{"POST", "/v1/addresses", newAddress("Flood"), false},
		{"DELETE", "/v1/addresses/" + id, nil, false},
		{"PUT", "/v1/cart/items/" + id, map[string]int{"quantity": 1}, false},
		{"DELETE", "/v1/cart/items/" + id, nil, false},
		{"DELETE", "/v1/cart", nil, false},
		{"POST", "/v1/checkout/preview", map[string]any{"cart_sku_ids": []string{id}}, false},
		{"POST", "/v1/orders/" + id + "/cancel", nil, false},
		{"POST", "/v1/skus", newSKU("Flood", 100, 1), true},
		{"PATCH", "/v1/skus/" + id, `{"price":1}`, true},
		{"POST", "/v1/skus/" + id + "/pause", nil, true},
		{"POST", "/v1/skus/" + id + "/resume", nil, true},
		{"POST", "/v1/skus/" + id + "/restock", map[string]int{"quantity": 1}, true},
		{"POST", "/v1/admin/dead-letters/1/replay", nil, true},
	}
}

// TestWriteRoutesRateLimited sends each write route (and the preview)
// more requests than a user's bucket holds: past the burst the answer is
// 429 with Retry-After, before the handler runs, whatever the request.
func TestWriteRoutesRateLimited(t *testing.T) {
	t.Parallel()
	const burst = 3
	e := newOrderEnv(t, withAdminOps, withConfig(func(c *Config) {
		c.WriteRate, c.WriteBurst = 0.01, burst // one more token in 100 s
	}), func(_ *orderEnv, _ *Config, d *Deps) {
		d.SKUAdmin = d.SKUs.(SKUAdminStore)
		d.DeadLetters = d.Orders.(*postgres.DB)
	})
	for i, rt := range writeRoutes() {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			tok, err := auth.Mint(e.Secret, "writer-"+strconv.Itoa(i), rt.admin, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			for n := range burst {
				if resp, body := e.do(t, rt.method, rt.path, tok, rt.body); resp.StatusCode == http.StatusTooManyRequests {
					t.Fatalf("request %d of the burst of %d: 429 %s", n+1, burst, body)
				}
			}
			resp, body := e.do(t, rt.method, rt.path, tok, rt.body)
			wantProblem(t, resp, body, http.StatusTooManyRequests)
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
				t.Errorf("Retry-After %q, want whole seconds", resp.Header.Get("Retry-After"))
			}
		})
	}
	// Another user's bucket is their own; reads are not limited by it.
	other := e.token(t, "reader")
	e.mustDo(t, "GET", "/v1/cart", other, nil, http.StatusOK, nil)
	e.mustDo(t, "DELETE", "/v1/cart", other, nil, http.StatusNoContent, nil)
}

// TestWriteFloodCost: one user floods POST /v1/addresses from 64
// connections with the default limits (DefaultWriteRate, DefaultWriteBurst).
// It checks that no more were admitted than the bucket allows and no more
// addresses stored than the cap, and logs what the flood cost: answers by
// status, addresses stored, time per request.
func TestWriteFloodCost(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, withoutOpenAPICheck(), func(_ *testEnv, c *Config, _ *Deps) {
		c.WriteRate, c.WriteBurst = DefaultWriteRate, DefaultWriteBurst
	})
	tok := e.token(t, "flooder")
	body, err := json.Marshal(newAddress("Flood"))
	if err != nil {
		t.Fatal(err)
	}
	const n, workers = 2000, 64
	var mu sync.Mutex
	codes := map[int]int{}
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan struct{})
	for range workers {
		wg.Go(func() {
			for range jobs {
				req, _ := http.NewRequest("POST", e.URL+"/v1/addresses", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				code := -1
				if resp, err := e.Client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	var stored int
	if err := e.DB.Get(&stored, `SELECT count(*) FROM addresses WHERE user_id = 'flooder'`); err != nil {
		t.Fatal(err)
	}
	admitted := n - codes[http.StatusTooManyRequests]
	// The bucket refills while the flood runs; the server's clock and
	// this one differ by a request's flight, so allow a few tokens more
	// than burst + rate * took (the flood is 2000 requests: the bound
	// still says nearly all of them were refused).
	if most := DefaultWriteBurst + int(math.Ceil(DefaultWriteRate*took.Seconds()*1.1)) + 2; admitted > most {
		t.Errorf("%d admitted in %s, more than the bucket allows (%d); answers %v", admitted, took, most, codes)
	}
	if stored > postgres.MaxAddresses {
		t.Errorf("%d addresses stored, the cap is %d", stored, postgres.MaxAddresses)
	}
	t.Logf("%d POST /v1/addresses by one user in %s (%s each): answers %v; %d admitted, %d addresses stored",
		n, took.Round(time.Millisecond), (took / n).Round(time.Microsecond), codes, admitted, stored)
}

// BenchmarkWriteLimiterFlood: the cost of refusing one user's flood at
// the limiter (b.N requests of one user, the default limits); it reports
// how many were admitted.
func BenchmarkWriteLimiterFlood(b *testing.B) {
	l := newWriteLimiter(Config{WriteRate: DefaultWriteRate, WriteBurst: DefaultWriteBurst}, prometheus.NewRegistry())
	admitted := 0
	b.ReportAllocs()
	for b.Loop() {
		if l.admit("flooder", time.Now()) == nil {
			admitted++
		}
	}
	b.ReportMetric(float64(admitted), "admitted")
}
