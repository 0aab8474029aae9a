package ingress

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// The path and query fuzzers drive the real Server handler (ServeHTTP, no
// listener: the bytes reach the mux as the fuzzer wrote them) on real
// stores: PostgreSQL, Redis and a NATS server with both streams, as
// newOrderEnv wires them, plus the admin routes' stores. Their seed corpora
// are in testdata/fuzz/FuzzPathParams and testdata/fuzz/FuzzOrderQueries.
// Run them with
//
//	go test -run '^$' -fuzz '^FuzzPathParams$' -fuzztime 3m ./services/ingress/
//	go test -run '^$' -fuzz '^FuzzOrderQueries$' -fuzztime 3m ./services/ingress/
//
// Run on 2026-11-26 (2 shared cores, load average 8 to 15, a Redis of its
// own through TEST_REDIS_URL: the snapshot scans every key of the prefix's
// server): FuzzPathParams 2 x 3 min, 14,601 + 9,127 executions;
// FuzzOrderQueries 2 x 3 min, 11,576 + 6,984 executions. No crash, no 5xx,
// no change of state. What the first runs taught the fuzzers (not bugs):
// DELETE /v1/cart/items/{any UUID} is an idempotent 204 that changes
// nothing; http.ServeMux answers a path that is not clean ("..", "//")
// with a redirect to its clean form and runs no handler; a problem's
// "instance" echoes the whole path (up to the 64 KiB header limit) while
// its detail is truncated; a request context that ends by deadline rather
// than cancellation is a 500 (net/http only cancels, so only a test sees
// it).

// fuzzEnv is what both fuzzers need: an orderEnv with every optional route
// wired, an owner (alice) of an address, a pending and a confirmed order,
// a SKU, a dead letter, and an attacker (bob) who owns nothing.
type fuzzEnv struct {
	*orderEnv
	alice, bob       buyer
	admin            string
	sku              *order.SKU
	pending, decided uuid.UUID
	deadLetter       int64
	known            map[uuid.UUID]bool
}

// newFuzzEnv is newOrderEnv for a testing.TB (a fuzz test's *testing.F),
// with the payment webhook, the SKU admin and dead letter routes wired.
func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	ns := natstest.Start(tb)
	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(nc.Close)
		return nc
	}
	nc := connect("ingress")
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		tb.Fatal(err)
	}
	hub, err := natsbus.NewHub(connect("hub"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	oe := &orderEnv{NATS: ns, NC: nc, JS: js, Hub: hub}
	oe.testEnv = newTestEnv(tb, func(te *testEnv, cfg *Config, d *Deps) {
		cfg.PublishTimeout = time.Second
		cfg.WebhookSecret = string(testWebhookSecret)
		// The fuzzer is one user sending thousands of requests.
		cfg.CheckoutRate, cfg.CheckoutInflight = 0, 0
		d.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		d.Orders = te.DB
		d.Numbers = te.DB
		d.Publisher = natsbus.NewPublisher(js)
		d.Waiter = hub
		d.Payments = te.DB
		d.SKUAdmin = te.DB
		d.DeadLetters = te.DB
		d.Replayer = natsbus.NewPublisher(js)
	})
	tb.Cleanup(hub.Close)

	e := &fuzzEnv{orderEnv: oe, admin: oe.adminToken(tb), known: map[uuid.UUID]bool{}}
	mkBuyer := func(id string) buyer {
		tok := e.token(tb, id)
		return buyer{ID: id, Token: tok, Address: e.createAddress(tb, tok, newAddress("Ada "+id)).ID}
	}
	e.alice, e.bob = mkBuyer("fuzz-alice"), mkBuyer("fuzz-bob")
	e.sku = e.createSKU(tb, newSKU("Fuzzed", 1500, 100))
	resp, body := e.doHeaders(tb, "POST", "/v1/orders", e.alice.Token,
		directBody(e.alice, order.LineRequest{SKUID: e.sku.ID, Quantity: 1}), nil)
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("checkout: %d %s", resp.StatusCode, body)
	}
	var a accepted
	if err := json.Unmarshal(body, &a); err != nil {
		tb.Fatal(err)
	}
	e.pending = a.OrderID
	// A decided order, in PostgreSQL only, as a partition writes it.
	e.decided = uuid.New()
	at := time.Now().UTC().Truncate(time.Microsecond)
	if _, err := e.DB.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status,
		currency, subtotal, shipping_fee, grand_total, home_partition, accepted_at, updated_at)
		VALUES ($1, 'FS-20260101-900000001', $2, $3, 'card', 'confirmed', 'EUR', 1500, $4, $5, 0, $6, $6)`,
		e.decided, e.alice.ID, e.alice.Address, testShippingFee, 1500+testShippingFee, at); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.DB.Exec(`INSERT INTO order_lines (order_id, line_no, sku_id, quantity, unit_price, line_total) VALUES ($1, 0, $2, 1, 1500, 1500)`, e.decided, e.sku.ID); err != nil {
		tb.Fatal(err)
	}
	cmd := order.Command{ID: uuid.New(), Kind: order.KindCheckout, Partition: 0,
		Checkout: &order.Checkout{OrderID: uuid.New(), OrderNumber: "FS-1", UserID: "u1", AddressID: uuid.New(), PaymentMethod: order.PayCard,
			Lines: []order.LineRequest{{SKUID: uuid.New(), Quantity: 2}}}}
	payload, err := order.EncodeEnvelope(cmd)
	if err != nil {
		tb.Fatal(err)
	}
	e.deadLetter, _, err = e.DB.RecordDeadLetter(context.Background(), &postgres.DeadLetter{SourceKey: "fuzz", Partition: 0,
		Subject: order.Subject(0), StreamSeq: 7, Reason: postgres.DeadMaxDeliveries, LastError: "boom", Deliveries: 10, Payload: payload})
	if err != nil {
		tb.Fatal(err)
	}
	for _, id := range []uuid.UUID{e.alice.Address, e.bob.Address, e.sku.ID, e.pending, e.decided} {
		e.known[id] = true
	}
	// Warm the status cache: a read of an order that only PostgreSQL holds
	// caches it, which is not a change a request makes to the sale.
	for _, id := range []uuid.UUID{e.pending, e.decided} {
		e.serve(tb, "GET", "/v1/orders/"+id.String(), "", e.alice.Token, "", nil, time.Second)
	}
	return e
}

// names reports whether s, or one of its /-separated segments, names an
// existing resource, in any spelling the parsers accept (a UUID in upper
// case, a dead letter id with a sign or leading zeros).
func (e *fuzzEnv) names(s string) bool {
	for _, seg := range strings.Split(s, "/") {
		if id, err := uuid.Parse(seg); err == nil && e.known[id] {
			return true
		}
		if n, err := strconv.ParseInt(seg, 10, 64); err == nil && n == e.deadLetter {
			return true
		}
	}
	return false
}

// isUUID reports whether s is a UUID as pathUUID accepts it.
func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// serve sends one request straight to the server's handler. target is the
// request target as a client would write it (escaped path and query) unless
// rawPath is set: then rawPath is the unescaped path, put in the URL as is.
func (e *fuzzEnv) serve(tb testing.TB, method, target, rawPath, token, body string, header http.Header, timeout time.Duration) (*httptest.ResponseRecorder, bool) {
	var u *url.URL
	if rawPath != "" {
		u = &url.URL{Path: rawPath}
	} else {
		var err error
		if u, err = url.ParseRequestURI(target); err != nil {
			return nil, false // no HTTP client can send it
		}
	}
	// The client hangs up after timeout: net/http cancels the request's
	// context (context.Canceled), as it does when a connection closes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer time.AfterFunc(timeout, cancel).Stop()
	var rb io.Reader = http.NoBody
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://orderd.test/", rb)
	if err != nil {
		tb.Fatal(err)
	}
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	req.RequestURI = u.RequestURI()
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
		if method == "PATCH" {
			req.Header.Set("Content-Type", "application/merge-patch+json")
		}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v) // canonical, as net/http's parser would make it
		}
	}
	rec := httptest.NewRecorder()
	e.Server.Handler().ServeHTTP(rec, req)
	return rec, true
}

// checkAnswer fails unless rec is a 4xx problem (or, when ok2xx, a success,
// or when okGone, the 499 of a client that hung up). A redirect is allowed
// only to the clean form of a path that was not clean (http.ServeMux's own
// answer; it runs no handler).
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder, reqPath string, ok2xx, okGone bool) {
	t.Helper()
	code := rec.Code
	switch {
	case code >= 200 && code < 300:
		if !ok2xx {
			t.Fatalf("status %d for a request that names nothing: %s", code, truncate(rec.Body.String(), 300))
		}
		return
	case code == http.StatusMovedPermanently || code == http.StatusTemporaryRedirect || code == http.StatusPermanentRedirect:
		if path.Clean(reqPath) == reqPath && !strings.HasSuffix(reqPath, "/") {
			t.Fatalf("redirect %d of a clean path %q to %q", code, reqPath, rec.Header().Get("Location"))
		}
		return
	case code == 499:
		if !okGone {
			t.Fatalf("499 while the client was still there")
		}
		return
	case code < 400 || code > 499:
		t.Fatalf("status %d, want a 4xx problem: %s", code, truncate(rec.Body.String(), 300))
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d with Content-Type %q, want application/problem+json: %s", code, ct, truncate(rec.Body.String(), 300))
	}
	var p problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != code || p.Type == "" || p.Title == "" {
		t.Fatalf("status %d, problem %+v (%v): %s", code, p, err, truncate(rec.Body.String(), 300))
	}
	if len(p.Detail) > 512 {
		t.Fatalf("problem detail of %d bytes: hostile input echoed whole", len(p.Detail))
	}
}

// pathRoute is a route with one path parameter, split around it.
type pathRoute struct {
	method, prefix, suffix string
	admin                  bool
	body                   string
}

// pathRoutes returns every registered route with a path parameter: the
// fuzzer covers routes added later without being told.
func pathRoutes(tb testing.TB, s *Server) []pathRoute {
	var out []pathRoute
	for _, r := range s.Routes() {
		method, pattern, _ := strings.Cut(r, " ")
		i, j := strings.Index(pattern, "{"), strings.Index(pattern, "}")
		if i < 0 {
			continue
		}
		pr := pathRoute{method: method, prefix: pattern[:i], suffix: pattern[j+1:]}
		pr.admin = strings.HasPrefix(pattern, "/v1/admin/") ||
			(strings.HasPrefix(pattern, "/v1/skus/") && !(method == "GET" && pr.suffix == ""))
		switch {
		case method == "PATCH":
			pr.body = `{"price":900}`
		case method == "PUT", strings.HasSuffix(pattern, "/restock"):
			pr.body = `{"quantity":1}`
		}
		out = append(out, pr)
	}
	if len(out) < 14 {
		tb.Fatalf("only %d routes with path parameters: %v", len(out), s.Routes())
	}
	return out
}

// FuzzPathParams sends every route that has a path parameter an arbitrary
// parameter, as the unescaped path (raw false: any bytes at all) or as the
// client's escaped request target (raw true: percent escapes, %2F, dots),
// by its owner (alice, owner true), by another user (bob) or, on admin
// routes, by the admin. Unless the parameter names an existing resource
// (in any spelling the parser accepts), the answer must be a 4xx problem
// and nothing may change: PostgreSQL, Redis and the command stream are
// compared before and after each request.
func FuzzPathParams(f *testing.F) {
	e := newFuzzEnv(f)
	routes := pathRoutes(f, e.Server)
	seeds := []string{
		"*", ">", "orders.>", "a.b", "orders.cmd.*", ".", "..", "%2A", "%3E", "%2E%2E", "%2F", "a%2Fb", "%00", "\x00", "\xff\xfe",
		" ", "\t", "\r\n", "-1", "0", "+1", "1e3", "9223372036854775808", "-9223372036854775808", "0x10", "00000000000000000001",
		uuid.Nil.String(), strings.ToUpper(uuid.NewString()), "{" + uuid.NewString() + "}", "urn:uuid:" + uuid.NewString(),
		strings.ReplaceAll(uuid.NewString(), "-", ""), uuid.NewString() + ".x", uuid.NewString() + "/", uuid.NewString()[:35],
		uuid.NewString() + "/cancel", "x/../../skus", strings.Repeat("a", 10000), "ᚠ", "%u0041", "${jndi:ldap://x}", "'; DROP TABLE orders;--",
	}
	for i := range routes {
		for j, s := range seeds {
			f.Add(uint8(i), s, j%2 == 0, j%3 == 0)
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, param string, raw, owner bool) {
		r := routes[int(route)%len(routes)]
		tok := e.bob.Token
		switch {
		case r.admin:
			tok = e.admin
		case owner:
			tok = e.alice.Token
		}
		target, rawPath := "", ""
		if raw {
			target = r.prefix + param + r.suffix
			if strings.ContainsAny(target, "?#") { // the rest is a query or fragment, not the parameter
				return
			}
			u, err := url.ParseRequestURI(target)
			if err != nil {
				return // no client can send it
			}
			rawPath = ""
			param = strings.TrimSuffix(strings.TrimPrefix(u.Path, r.prefix), r.suffix)
		} else {
			if param == "" {
				return
			}
			rawPath = r.prefix + param + r.suffix
		}
		timeout := 2 * time.Second
		if r.suffix == "/events" {
			timeout = 300 * time.Millisecond // an owner's stream lasts until the client hangs up
		}
		t.Logf("%s target %q path %q (owner %v)", r.method, target, rawPath, owner)
		before, cmds := e.snapshot(t), e.commandCount(t)
		rec, ok := e.serve(t, r.method, target, rawPath, tok, r.body, nil, timeout)
		if !ok {
			return
		}
		reqPath := rawPath
		if raw {
			u, _ := url.ParseRequestURI(target)
			reqPath = u.Path
		}
		named := e.names(param)
		// Removing a cart item that is not in the cart is an idempotent
		// 204 that changes nothing (checked below).
		idempotent := r.method == "DELETE" && r.prefix == "/v1/cart/items/" && isUUID(param)
		checkAnswer(t, rec, reqPath, named || idempotent, named && r.suffix == "/events")
		if named {
			return // a real resource: its owner may change it
		}
		e.assertUnchanged(t, before)
		if got := e.commandCount(t); got != cmds {
			t.Fatalf("%d commands after %s %s, want %d", got, r.method, reqPath, cmds)
		}
	})
}

// queryRoute is a route the query fuzzer drives, as alice or the admin.
type queryRoute struct {
	path   string
	admin  bool
	events bool // the SSE stream: Last-Event-ID applies
	waits  bool // ?wait= may hold the answer until the client hangs up
}

// FuzzOrderQueries sends the read routes arbitrary query strings (?wait=,
// ?since=, ?cursor=, ?limit=, ?after=, ?before=, repeated and broken ones)
// and the order stream an arbitrary Last-Event-ID, as the owner of the
// orders. The answer must be a success, a 4xx problem or, for a long-poll
// or a stream, the client hanging up; a Last-Event-ID that is not a status
// must be a 400; and nothing may change.
func FuzzOrderQueries(f *testing.F) {
	e := newFuzzEnv(f)
	routes := []queryRoute{
		{path: "/v1/orders/" + e.pending.String(), waits: true},
		{path: "/v1/orders/" + e.decided.String(), waits: true},
		{path: "/v1/orders/" + e.pending.String() + "/events", events: true, waits: true},
		{path: "/v1/orders/" + e.decided.String() + "/events", events: true, waits: true},
		{path: "/v1/orders"},
		{path: "/v1/skus"},
		{path: "/v1/addresses"},
		{path: "/v1/cart"},
		{path: "/v1/admin/dead-letters", admin: true},
		{path: "/v1/skus/" + e.sku.ID.String() + "/audit", admin: true},
	}
	queries := []string{
		"", "wait=1s", "wait=0", "wait=30s", "wait=31s", "wait=-1s", "wait=1e309", "wait=NaN", "wait=Inf", "wait=-0", "wait=0.001",
		"wait=9223372036854775807ns", "wait=2562047h", "wait=1s&wait=2s", "wait=%00", "wait=1s&since=confirmed", "since=pending",
		"since=paid", "since=*", "since=CONFIRMED", "since=", "since=confirmed&since=pending", "limit=0", "limit=-1", "limit=101",
		"limit=9223372036854775808", "limit=1e2", "limit=%20%31", "cursor=", "cursor=*", "cursor=eyJ9", "cursor=AAAA", "cursor=%FF%FE",
		"cursor=" + strings.Repeat("A", 4096), "after=" + uuid.NewString(), "after=*", "after=" + strings.ToUpper(e.sku.ID.String()),
		"before=0", "before=-1", "before=9223372036854775808", "before=+1", "a=%zz", "%", "&&&", "wait", "wait==1s", ";wait=1s",
	}
	ids := []string{"", "pending", "confirmed", "paid", "rejected", "*", ">", "-1", "99999999999999999999", "pending.>", " confirmed ",
		"CONFIRMED", "\x00", "\xff", strings.Repeat("x", 8<<10), "1", "0"}
	for i := range routes {
		for j, q := range queries {
			f.Add(uint8(i), q, ids[j%len(ids)])
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, query, lastEventID string) {
		r := routes[int(route)%len(routes)]
		tok := e.alice.Token
		if r.admin {
			tok = e.admin
		}
		var h http.Header
		if lastEventID != "" {
			h = http.Header{"Last-Event-ID": {lastEventID}}
		}
		timeout := 2 * time.Second
		if r.waits {
			timeout = 300 * time.Millisecond
		}
		before, cmds := e.snapshot(t), e.commandCount(t)
		target := r.path
		if query != "" {
			target += "?" + query
		}
		t.Logf("GET %q Last-Event-ID %q", target, truncate(lastEventID, 64))
		rec, ok := e.serve(t, "GET", target, "", tok, "", h, timeout)
		if !ok {
			return // not a request target: net/http answers 400 before any handler
		}
		checkAnswer(t, rec, r.path, true, r.waits)
		if r.events {
			if v := strings.TrimSpace(lastEventID); v != "" {
				if _, valid := order.ParseStatus(v); !valid && rec.Code != http.StatusBadRequest {
					t.Fatalf("Last-Event-ID %q: status %d, want 400", truncate(v, 64), rec.Code)
				}
			}
		}
		e.assertUnchanged(t, before)
		if got := e.commandCount(t); got != cmds {
			t.Fatalf("%d commands after GET %s, want %d", got, target, cmds)
		}
	})
}
