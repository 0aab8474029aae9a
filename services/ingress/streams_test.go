package ingress

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

func init() {
	// A client that stops reading is cut sooner than in production, so
	// that TestStreamWriteDeadline is quick; a test that reads is never
	// that slow.
	streamWriteTimeout = 2 * time.Second
}

// openStream sends GET path with token and returns the response as soon
// as its headers arrive; the body is closed when the test ends, or by
// the caller (which ends the stream).
func (e *orderEnv) openStream(t *testing.T, path, token string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", e.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Transport: e.Client.Transport}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// wantOpen fails unless resp is an open stream (200).
func wantOpen(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: status %d, want 200 (an open stream); body %s", resp.Request.URL.Path, resp.StatusCode, body)
	}
}

// wantCapped fails unless resp is a 429 with a Retry-After.
func wantCapped(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		body := "(an open stream)"
		if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(resp.Body)
			body = string(data)
		}
		t.Fatalf("%s?%s: status %d, want 429; body %s", resp.Request.URL.Path, resp.Request.URL.RawQuery, resp.StatusCode, body)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want whole seconds", resp.Header.Get("Retry-After"))
	}
}

// pendingOrder places an order for a new buyer (no worker runs: it stays
// pending) and returns the buyer and the order's id.
func (e *orderEnv) pendingOrder(t *testing.T, sku *order.SKU) (buyer, uuid.UUID) {
	t.Helper()
	b := e.newBuyer(t)
	return b, e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID
}

// TestStreamsCapped: with 2 streams per user and 3 in all, event streams,
// long-polls and the operator stream share the caps; past either, 429
// with Retry-After before anything is read; a plain GET is not capped; a
// closed stream frees its place.
func TestStreamsCapped(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withOpsFeed(t), withConfig(func(c *Config) { c.StreamsPerUser, c.StreamsTotal = 2, 3 }))
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	a, ida := e.pendingOrder(t, sku)
	b, idb := e.pendingOrder(t, sku)
	c, idc := e.pendingOrder(t, sku)
	events := func(id uuid.UUID) string { return "/v1/orders/" + id.String() + "/events" }
	poll := func(id uuid.UUID) string { return "/v1/orders/" + id.String() + "?wait=2s" }

	first := e.openStream(t, events(ida), a.Token)
	wantOpen(t, first)
	wantOpen(t, e.openStream(t, events(ida), a.Token))
	wantCapped(t, e.openStream(t, events(ida), a.Token)) // a's third
	wantCapped(t, e.openStream(t, poll(ida), a.Token))
	e.mustDo(t, "GET", "/v1/orders/"+ida.String(), a.Token, nil, http.StatusOK, nil) // not a stream

	wantOpen(t, e.openStream(t, events(idb), b.Token)) // the third in all
	wantCapped(t, e.openStream(t, events(idc), c.Token))
	wantCapped(t, e.openStream(t, poll(idc), c.Token))
	wantCapped(t, e.openStream(t, "/v1/admin/stream", e.adminToken(t)))

	// Closing a stream frees its place (once the server saw it go).
	first.Body.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp := e.openStream(t, events(idc), c.Token)
		if resp.StatusCode == http.StatusOK {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream's place was not freed: still %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStreamsEndWhenTokenExpires: an order's event stream, the operator
// stream and a long-poll opened with a token end when it expires, the
// event streams with a token_expired event; the client resumes with a
// fresh token and Last-Event-ID, and the expired token opens nothing.
func TestStreamsEndWhenTokenExpires(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withOpsFeed(t))
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	b, id := e.pendingOrder(t, sku)
	short := func(sub string, admin bool) (string, time.Time) {
		t.Helper()
		tok, err := auth.Mint(e.Secret, sub, admin, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var c jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil || c.ExpiresAt == nil {
			t.Fatalf("the minted token's exp: %v", err)
		}
		return tok, c.ExpiresAt.Time
	}

	// The order's stream.
	tok, exp := short(b.ID, false)
	resp := e.openStream(t, "/v1/orders/"+id.String()+"/events", tok)
	wantOpen(t, resp)
	events := readSSE(t, resp.Body)
	wantEvent(t, events.next(t), id, order.StatusPending)
	var last sseEvent
	for ev := range events.eventsUntil(t, 30*time.Second) {
		last = ev
	}
	if ended := time.Now(); ended.Before(exp) {
		t.Errorf("the stream ended at %s, before its token expired at %s", ended, exp)
	}
	if last.Event != "token_expired" {
		t.Errorf("the last event was %q, want token_expired", last.Event)
	}
	// The expired token opens nothing; a fresh one resumes after pending.
	resp = e.openStream(t, "/v1/orders/"+id.String()+"/events", tok)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the expired token reopened the stream: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+"/v1/orders/"+id.String()+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+b.Token)
	req.Header.Set("Last-Event-ID", "pending")
	resp2, err := (&http.Client{Transport: e.Client.Transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	wantOpen(t, resp2)
	resumed := readSSE(t, resp2.Body)
	e.decide(t, id, order.StatusConfirmed)
	wantEvent(t, resumed.next(t), id, order.StatusConfirmed)

	// The operator stream.
	tok, exp = short("ops", true)
	resp = e.openStream(t, "/v1/admin/stream?interval=250ms", tok)
	wantOpen(t, resp)
	lastEvent := ""
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			lastEvent = ev
		}
		if time.Now().After(exp.Add(30 * time.Second)) {
			t.Fatalf("the operator stream is still open 30 s after its token expired")
		}
	}
	if ended := time.Now(); ended.Before(exp) || lastEvent != "token_expired" {
		t.Errorf("the operator stream ended at %s with event %q; its token expired at %s, want token_expired after it", ended, lastEvent, exp)
	}

	// A long-poll answers when the token expires, not after its wait.
	b2, id2 := e.pendingOrder(t, sku)
	tok, exp = short(b2.ID, false)
	var o order.Order
	e.mustDo(t, "GET", "/v1/orders/"+id2.String()+"?wait=30s", tok, nil, http.StatusOK, &o)
	if answered := time.Now(); answered.Before(exp) || answered.After(exp.Add(20*time.Second)) || o.Status != order.StatusPending {
		t.Errorf("the long-poll answered %s at %s; its token expired at %s: want pending at the expiry, not after the 30 s wait", o.Status, answered, exp)
	}
}

// eventsUntil yields the stream's events until it ends, failing the test
// if it is still open after d.
func (r *sseReader) eventsUntil(t *testing.T, d time.Duration) func(func(sseEvent) bool) {
	return func(yield func(sseEvent) bool) {
		timeout := time.After(d)
		for {
			select {
			case ev, ok := <-r.events:
				if !ok || !yield(ev) {
					return
				}
			case <-timeout:
				t.Fatalf("the stream is still open after %s", d)
				return
			}
		}
	}
}

// stuckWriter is a ResponseWriter whose client stops reading after the
// first n bytes: later writes block until the write deadline passes, as a
// socket's do once its buffers are full, and then fail. Without a deadline
// they block until the test ends.
type stuckWriter struct {
	header http.Header
	n      int

	mu       sync.Mutex
	written  int
	deadline time.Time
	done     chan struct{}
}

func newStuckWriter(n int) *stuckWriter {
	return &stuckWriter{header: http.Header{}, n: n, done: make(chan struct{})}
}

func (w *stuckWriter) Header() http.Header { return w.header }
func (w *stuckWriter) WriteHeader(int)     {}

func (w *stuckWriter) Write(p []byte) (int, error) {
	for {
		w.mu.Lock()
		if w.written+len(p) <= w.n {
			w.written += len(p)
			w.mu.Unlock()
			return len(p), nil
		}
		dl := w.deadline
		w.mu.Unlock()
		if !dl.IsZero() && time.Now().After(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		select {
		case <-w.done:
			return 0, io.ErrClosedPipe
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (w *stuckWriter) FlushError() error { return nil }

func (w *stuckWriter) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadline = t
	return nil
}

// TestStreamWriteDeadline: a client that stops reading an event stream or
// the operator stream is cut after the write timeout, so that it holds
// neither a goroutine nor a stream's place for ever.
func TestStreamWriteDeadline(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withOpsFeed(t))
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	b, id := e.pendingOrder(t, sku)
	for _, c := range []struct{ path, token string }{
		{"/v1/orders/" + id.String() + "/events", b.Token},
		{"/v1/admin/stream?interval=250ms", e.adminToken(t)},
	} {
		t.Run(c.path, func(t *testing.T) {
			w := newStuckWriter(64) // the client reads 64 bytes, then nothing
			defer close(w.done)
			req := httptest.NewRequest("GET", c.path, nil)
			req.Header.Set("Authorization", "Bearer "+c.token)
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				e.Server.Handler().ServeHTTP(w, req)
			}()
			select {
			case <-ended:
			case <-time.After(time.Minute):
				t.Fatal("the handler still writes to a client that stopped reading a minute ago")
			}
		})
	}
}

// TestStreamFloodCost: with the default caps, one user opens 10,000
// event streams from 64 connections: 8 are admitted, the rest answered
// 429 before any store is read. It logs the time the flood took, then
// what an admitted stream costs in memory, measured over 200 streams of
// 200 users (the heap and the stacks of this process, which holds both
// ends of each connection: an upper bound of the server's share).
func TestStreamFloodCost(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withConfig(func(c *Config) {
		c.StreamsPerUser, c.StreamsTotal = DefaultStreamsPerUser, DefaultStreamsTotal
	}))
	sku := e.createSKU(t, newSKU("Sneaker", 100, 1000))
	b, id := e.pendingOrder(t, sku)
	path := e.URL + "/v1/orders/" + id.String() + "/events"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(client.CloseIdleConnections)

	const n, workers = 10_000, 64
	var mu sync.Mutex
	codes := map[int]int{}
	var open []io.Closer
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for range jobs {
				req, _ := http.NewRequest("GET", path, nil)
				req.Header.Set("Authorization", "Bearer "+b.Token)
				resp, err := client.Do(req)
				code := -1
				if err == nil {
					code = resp.StatusCode
					if code == http.StatusOK {
						mu.Lock()
						open = append(open, resp.Body) // held open
						mu.Unlock()
					} else {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
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
	if codes[http.StatusOK] != DefaultStreamsPerUser || codes[http.StatusTooManyRequests] != n-DefaultStreamsPerUser {
		t.Errorf("answers %v; want %d streams and the rest 429", codes, DefaultStreamsPerUser)
	}
	t.Logf("%d stream opens by one user in %s (%s each): answers %v; %d open in this process",
		n, took.Round(time.Millisecond), (took / n).Round(time.Microsecond), codes, e.Server.streams.count())

	// The memory of an open stream.
	const users = 200
	var tokens []string
	var orders []uuid.UUID
	for range users { // written as a partition would: no checkout, which the backlog guard would shed
		b := e.newBuyer(t)
		o := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
		tokens, orders = append(tokens, b.Token), append(orders, o.ID)
	}
	before := inUse()
	opened := e.Server.streams.count()
	for i := range users {
		req, _ := http.NewRequest("GET", e.URL+"/v1/orders/"+orders[i].String()+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i, resp, err)
		}
		// Read the first event, so that the server is in its loop.
		if _, err := resp.Body.Read(make([]byte, 64)); err != nil {
			t.Fatal(err)
		}
		open = append(open, resp.Body)
	}
	if got := e.Server.streams.count() - opened; got != users {
		t.Fatalf("%d streams open, want %d", got, users)
	}
	per := (inUse() - before) / users
	t.Logf("an open event stream costs about %d KB (heap and stacks, both ends in this process)", per>>10)
}

// inUse returns the heap and stack bytes in use after a collection.
func inUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
