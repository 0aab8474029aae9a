package ingress

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// withOpsFeed wires the operator stream to an OpsFeed on the env's NATS
// server (closed when the test ends), and the dead letters to its
// database.
func withOpsFeed(t *testing.T) orderOption {
	return func(e *orderEnv, _ *Config, d *Deps) {
		f, err := natsbus.StartOpsFeed(e.NC, e.JS, natsbus.OpsFeedConfig{Partitions: 4, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		d.Ops = f
		d.DeadLetters = d.Orders.(*postgres.DB)
	}
}

// readSnapshots opens GET /v1/admin/stream?interval=... with token and
// returns the first n snapshots.
func readSnapshots(t *testing.T, base, token, interval string, n int) []adminSnapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/admin/stream?interval="+interval, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, Content-Type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var out []adminSnapshot
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	event := ""
	for sc.Scan() && len(out) < n {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if event != "snapshot" {
				t.Fatalf("data of event %q", event)
			}
			data := strings.TrimPrefix(line, "data: ")
			if err := checkSchema("AdminSnapshot", []byte(data)); err != nil {
				t.Errorf("snapshot does not match the AdminSnapshot schema: %v\n%s", err, data)
			}
			var s adminSnapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("decode snapshot: %v", err)
			}
			out = append(out, s)
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d snapshots: %v", len(out), sc.Err())
	}
	return out
}

// checkSchema validates a JSON document against a schema of openapi.json.
func checkSchema(name string, data []byte) error {
	c, err := apiDoc()
	if err != nil {
		return err
	}
	ref := c.doc.Components.Schemas[name]
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return ref.Value.VisitJSON(v)
}

func TestAdminStreamAccess(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withOpsFeed(t))
	admin, user := e.adminToken(t), e.token(t, "alice")

	resp, body := e.do(t, "GET", "/v1/admin/stream", "", nil)
	wantProblem(t, resp, body, http.StatusUnauthorized)
	resp, body = e.do(t, "GET", "/v1/admin/stream", "not-a-token", nil)
	wantProblem(t, resp, body, http.StatusUnauthorized)
	resp, body = e.do(t, "GET", "/v1/admin/stream", user, nil)
	wantProblem(t, resp, body, http.StatusForbidden)
	for _, bad := range []string{"x", "0", "-1s", "100ms", "11s", "NaN", "1h"} {
		resp, body = e.do(t, "GET", "/v1/admin/stream?interval="+bad, admin, nil)
		if p := wantProblem(t, resp, body, http.StatusUnprocessableEntity); !p.hasField("interval") {
			t.Errorf("interval=%s: problem %+v does not name interval", bad, p)
		}
	}
}

func TestAdminStreamUnconfigured(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	resp, body := e.do(t, "GET", "/v1/admin/stream", e.adminToken(t), nil)
	wantProblem(t, resp, body, http.StatusServiceUnavailable)
}

// TestAdminStreamSnapshots checks that the stream counts what happens:
// accepted checkouts (through the accepted notes), decisions and
// rejections by reason (through the order events), the SKUs, the
// partitions and the dead letters.
func TestAdminStreamSnapshots(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withOpsFeed(t))
	admin := e.adminToken(t)
	// The partitions' consumers, as a worker would create them (none runs).
	if _, err := natsbus.EnsurePartitionConsumers(context.Background(), e.JS, 4, natsbus.ConsumerSettings{}); err != nil {
		t.Fatal(err)
	}
	sku := e.createSKU(t, newSKU("Sneaker", 12900, 5))
	b := e.newBuyer(t)
	for range 3 {
		e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	}
	// Play the relay: publish a decision event of each kind on the core
	// subject the feed listens to.
	for _, ev := range []string{
		`{"type":"order.confirmed","data":{"status":"confirmed"}}`,
		`{"type":"order.rejected","data":{"status":"rejected","reject_reason":"out_of_stock"}}`,
		`{"type":"order.rejected","data":{"status":"rejected","reject_reason":"out_of_stock"}}`,
		`{"type":"order.rejected","data":{"status":"rejected","reject_reason":"sale_paused"}}`,
	} {
		var typ struct{ Type string }
		_ = json.Unmarshal([]byte(ev), &typ)
		if err := e.NC.Publish("orders.events."+typ.Type, []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	dl, _ := e.deadCheckout(t, "seq-7", 2)

	deadline := time.Now().Add(30 * time.Second)
	for {
		snaps := readSnapshots(t, e.URL, admin, "250ms", 2)
		s := snaps[len(snaps)-1]
		ok := s.Accepted == 3 && s.Ingresses == 1 && s.Confirmed == 1 && s.Rejected == 3 && s.Decided == 4 &&
			s.RejectReasons["out_of_stock"] == 2 && s.RejectReasons["sale_paused"] == 1
		if ok {
			if len(s.SKUs) != 1 || s.SKUs[0].ID != sku.ID || s.SKUs[0].Stock != 5 {
				t.Errorf("skus %+v, want the one SKU with stock 5", s.SKUs)
			}
			if len(s.Partitions) != 4 {
				t.Errorf("%d partitions, want 4", len(s.Partitions))
			}
			if len(s.DeadLetters) != 1 || s.DeadLetters[0].ID != dl || s.DeadLetters[0].ReplayedAt != nil {
				t.Errorf("dead letters %+v, want %d not replayed", s.DeadLetters, dl)
			}
			// The checkouts are on partition p's queue, no worker runs.
			p := s.Partitions[order.Partition(sku.ID, 4)]
			if p.Pending+uint64(p.AckPending) == 0 || p.PinnedClient != nil {
				t.Errorf("partition %+v: want pending commands and no pin", p)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("last snapshot %+v", s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAdminPageServed(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	for _, c := range []struct{ path, ctype, contains string }{
		{"/admin/", "text/html; charset=utf-8", `<script src="app.js"`},
		{"/admin/index.html", "text/html; charset=utf-8", "<canvas"},
		{"/admin/app.js", "text/javascript; charset=utf-8", "/v1/admin/stream"},
		{"/admin/app.css", "text/css; charset=utf-8", "--accepted"},
	} {
		resp, body := e.do(t, "GET", c.path, "", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != c.ctype {
			t.Errorf("GET %s: status %d, Content-Type %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"))
			continue
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s does not contain %q", c.path, c.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", c.path, csp)
		}
		// Nothing from elsewhere: the page must work offline.
		if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
			t.Errorf("GET %s refers to another origin", c.path)
		}
	}
	for _, p := range []string{"/admin/nope.js", "/admin/.hidden", "/admin/..%2fopenapi.go", "/admin/a/b"} {
		resp, body := e.do(t, "GET", p, "", nil)
		wantProblem(t, resp, body, http.StatusNotFound)
	}
	// /admin redirects to the page.
	c := *e.Client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(e.URL + "/admin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/admin/" {
		t.Errorf("GET /admin: status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
