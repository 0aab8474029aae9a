package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// testSecret signs the test tokens.
var testSecret = []byte("test-secret-0123456789abcdef0123")

// testShippingFee is the flat shipping fee of the test server.
const testShippingFee = 1000

// testEnv is an ingress server on a fresh PostgreSQL database and a fresh
// Redis key prefix, served over HTTP by httptest. Every response that do
// receives is checked against the OpenAPI document (openapi.json).
type testEnv struct {
	DB          *postgres.DB
	DSN         string
	Redis       *redisstore.Store
	RedisPrefix string
	Server      *Server
	URL         string // the base URL of the HTTP server
	Secret      []byte
	Client      *http.Client

	checkOpenAPI bool
}

// envOption changes the configuration or dependencies of a testEnv's server
// before it is built: a test of the order routes plugs in its publisher,
// order store and waiter this way.
type envOption func(*testEnv, *Config, *Deps)

// withoutOpenAPICheck turns off the check of every response against the
// OpenAPI document (for tests that read streams or break responses).
func withoutOpenAPICheck() envOption {
	return func(e *testEnv, _ *Config, _ *Deps) { e.checkOpenAPI = false }
}

// newTestEnv starts a server with real stores: SKUs and addresses in
// PostgreSQL, carts and the status cache in Redis, the shipping fee
// testShippingFee. Everything is torn down in t.Cleanup.
func newTestEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	dsn, db := pgtest.New(t)
	rs, prefix := redistest.New(t)
	e := &testEnv{DB: db, DSN: dsn, Redis: rs, RedisPrefix: prefix, Secret: testSecret, checkOpenAPI: true}
	cfg := Config{ShippingFee: testShippingFee, Partitions: 4}
	deps := Deps{
		Log:       slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Auth:      auth.NewVerifier(testSecret),
		SKUs:      db,
		Addresses: db,
		Carts:     rs,
		Status:    rs,
		Registry:  prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(e, &cfg, &deps)
	}
	e.Server = New(cfg, deps)
	hs := httptest.NewServer(e.Server.Handler())
	t.Cleanup(hs.Close) // runs before the stores' cleanups: no request outlives them
	e.URL = hs.URL
	e.Client = hs.Client()
	e.Client.Timeout = 30 * time.Second
	return e
}

// tbWriter writes the server's log to the test's log.
type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// token mints a valid user token for user.
func (e *testEnv) token(t testing.TB, user string) string {
	t.Helper()
	tok, err := auth.Mint(e.Secret, user, false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// adminToken mints a valid admin token.
func (e *testEnv) adminToken(t testing.TB) string {
	t.Helper()
	tok, err := auth.Mint(e.Secret, "admin", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do sends a request and returns the response with its body read. body is
// sent as is if it is a string, []byte or io.Reader (with Content-Type
// application/json), as JSON otherwise, and not at all if nil. token, if not
// empty, goes in a bearer Authorization header. Unless the env was built
// withoutOpenAPICheck, the response must match the OpenAPI document.
func (e *testEnv) do(t testing.TB, method, path, token string, body any) (*http.Response, []byte) {
	t.Helper()
	return e.doHeaders(t, method, path, token, body, nil)
}

// doHeaders is do with extra request headers.
func (e *testEnv) doHeaders(t testing.TB, method, path, token string, body any, header http.Header) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.URL+path, r)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if e.checkOpenAPI {
		if err := checkResponse(req, resp, data); err != nil {
			t.Errorf("%s %s answered %d, which the OpenAPI document does not allow: %v\nbody: %s", method, path, resp.StatusCode, err, data)
		}
	}
	return resp, data
}

// mustDo sends a request like do, fails the test unless the status is want,
// and decodes a JSON answer into out if out is not nil.
func (e *testEnv) mustDo(t testing.TB, method, path, token string, body any, want int, out any) *http.Response {
	t.Helper()
	resp, data := e.do(t, method, path, token, body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp
}

// wantProblem fails the test unless resp is an RFC 9457 problem with status
// want, and returns it.
func wantProblem(t testing.TB, resp *http.Response, body []byte, want int) problem {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d; body: %s", resp.StatusCode, want, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", body, err)
	}
	if p.Status != want || p.Type == "" || p.Title == "" {
		t.Errorf("problem %+v: want status %d with a type and a title", p, want)
	}
	return p
}

// hasField reports whether p names field among its errors.
func (p problem) hasField(field string) bool {
	return slices.ContainsFunc(p.Errors, func(f order.FieldError) bool { return f.Field == field })
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// newSKU returns a valid SKU request.
func newSKU(name string, price, stock int64) order.NewSKU {
	return order.NewSKU{Name: name, Price: ptr(price), Currency: "EUR", Stock: ptr(stock)}
}

// createSKU creates a SKU through the API as the admin.
func (e *testEnv) createSKU(t testing.TB, n order.NewSKU) *order.SKU {
	t.Helper()
	var s order.SKU
	e.mustDo(t, "POST", "/v1/skus", e.adminToken(t), n, http.StatusCreated, &s)
	return &s
}

// newAddress returns a valid address request.
func newAddress(recipient string) order.NewAddress {
	return order.NewAddress{Recipient: recipient, Line1: "1 Main Street", City: "Berlin", PostalCode: "10115", Country: "DE"}
}

// createAddress creates an address of the token's user through the API.
func (e *testEnv) createAddress(t testing.TB, token string, n order.NewAddress) addressView {
	t.Helper()
	var a addressView
	e.mustDo(t, "POST", "/v1/addresses", token, n, http.StatusCreated, &a)
	return a
}

// setCart writes a cart hash field directly in Redis, bypassing the API's
// checks (to plant a quantity of 0, for example).
func (e *testEnv) setCart(t testing.TB, user string, sku uuid.UUID, value string) {
	t.Helper()
	if err := e.Redis.Client().HSet(context.Background(), e.RedisPrefix+"user_cart_"+user, sku.String(), value).Err(); err != nil {
		t.Fatal(err)
	}
}

// state is everything the service stores: every row of the tables the API
// writes and every Redis key of the env's prefix with its value.
type state struct {
	Tables map[string][]string
	Redis  map[string]string
}

// snapshot reads the whole stored state, to show that a bad request changed
// nothing. The partitions' line counters (queue:<p>:in and :done, see
// pkg/redisstore/queue.go) are left out: a failed publish counts its
// ticket as served, which moves both, and neither is an order's state.
func (e *testEnv) snapshot(t testing.TB) state {
	t.Helper()
	ctx := context.Background()
	st := state{Tables: map[string][]string{}, Redis: map[string]string{}}
	for _, table := range []string{"skus", "addresses", "orders", "order_lines", "reservations", "outbox"} {
		var rows []string
		if err := e.DB.SelectContext(ctx, &rows, `SELECT to_jsonb(t)::text FROM `+table+` t ORDER BY 1`); err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
		st.Tables[table] = rows
	}
	rdb := e.Redis.Client()
	iter := rdb.Scan(ctx, 0, e.RedisPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.HasPrefix(k, e.RedisPrefix+"queue:") {
			continue
		}
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatalf("snapshot redis %s: %v", k, err)
		}
		var v any
		switch typ {
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		default:
			v, err = rdb.Dump(ctx, k).Result()
		}
		if err != nil {
			t.Fatalf("snapshot redis %s: %v", k, err)
		}
		st.Redis[k] = fmt.Sprintf("%s %v", typ, v)
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("snapshot redis: %v", err)
	}
	return st
}

// assertUnchanged fails the test if the stored state differs from before.
func (e *testEnv) assertUnchanged(t testing.TB, before state) {
	t.Helper()
	if diff := cmp.Diff(before, e.snapshot(t)); diff != "" {
		t.Errorf("the request changed the stored state (-before +after):\n%s", diff)
	}
}
