package ingress

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

// TestObjectLevelAuthorization: every route that takes an id of something
// a user owns answers another user 404, exactly as for an id that does not
// exist (no oracle), and changes nothing; every admin route answers a user
// 403.
func TestObjectLevelAuthorization(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	sku := e.createSKU(t, newSKU("Owned", 1500, 100))
	alice, bob := e.newBuyer(t), e.newBuyer(t)
	e.mustDo(t, "PUT", "/v1/cart/items/"+sku.ID.String(), alice.Token, map[string]any{"quantity": 2}, http.StatusOK, nil)
	pending := e.mustCheckout(t, alice, directBody(alice, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	stored := e.insertOrder(t, alice, sku, order.StatusConfirmed, time.Now(), "", "")

	before, cmds := e.snapshot(t), e.commandCount(t)
	missing := uuid.New()
	// Bob's requests on Alice's things, each beside the same request on an
	// id that does not exist: both must be the same 404.
	type probe struct{ method, path string }
	var probes []probe
	for _, id := range []uuid.UUID{alice.Address, pending.OrderID, stored.ID} {
		probes = append(probes,
			probe{"GET", "/v1/addresses/" + id.String()},
			probe{"DELETE", "/v1/addresses/" + id.String()},
			probe{"GET", "/v1/orders/" + id.String()},
			probe{"GET", "/v1/orders/" + id.String() + "?wait=1s"},
			probe{"GET", "/v1/orders/" + id.String() + "/events"},
			probe{"POST", "/v1/orders/" + id.String() + "/cancel"},
		)
	}
	for _, p := range probes {
		t.Run(p.method+" "+p.path, func(t *testing.T) {
			resp, body := e.do(t, p.method, p.path, bob.Token, nil)
			got := wantProblem(t, resp, body, http.StatusNotFound)
			// The same route on an id nobody has answers alike, but for the id.
			other := strings.Replace(p.path, uuidIn(t, p.path), missing.String(), 1)
			resp, body = e.do(t, p.method, other, bob.Token, nil)
			want := wantProblem(t, resp, body, http.StatusNotFound)
			got.Detail = strings.ReplaceAll(got.Detail, uuidIn(t, p.path), missing.String())
			got.Instance = strings.ReplaceAll(got.Instance, uuidIn(t, p.path), missing.String())
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("another user's resource and a missing one answer differently (-missing +other's):\n%s", diff)
			}
		})
	}
	// Bob's cart routes touch only Bob's cart.
	e.mustDo(t, "DELETE", "/v1/cart/items/"+sku.ID.String(), bob.Token, nil, http.StatusNoContent, nil)
	e.mustDo(t, "DELETE", "/v1/cart", bob.Token, nil, http.StatusNoContent, nil)
	// Bob cannot check out to Alice's address, nor preview with it.
	resp, body := e.checkout(t, bob, directBody(alice, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	if p := wantProblem(t, resp, body, http.StatusUnprocessableEntity); !p.hasField("address_id") {
		t.Errorf("checkout with another user's address: %+v, want a field error on address_id", p)
	}
	// Bob's list does not show Alice's orders.
	// (The page's key is "items": decoding "orders" saw nothing, always.)
	var list struct {
		Items []order.Order `json:"items"`
	}
	e.mustDo(t, "GET", "/v1/orders", bob.Token, nil, http.StatusOK, &list)
	if len(list.Items) != 0 {
		t.Errorf("bob's order list holds %d orders of someone else", len(list.Items))
	}
	e.mustDo(t, "GET", "/v1/orders", alice.Token, nil, http.StatusOK, &list)
	if len(list.Items) != 2 {
		t.Errorf("alice's order list holds %d orders, want her 2: the check above would see nothing", len(list.Items))
	}
	e.assertUnchanged(t, before)
	if got := e.commandCount(t); got != cmds {
		t.Errorf("%d commands after another user's requests, want %d", got, cmds)
	}

	// Every admin route, with a user's token: 403, nothing changed.
	admin := []string{
		"POST /v1/skus", "PATCH /v1/skus/{id}", "POST /v1/skus/{id}/restock",
		"POST /v1/skus/{id}/pause", "POST /v1/skus/{id}/resume", "GET /v1/skus/{id}/audit",
	}
	checked := 0
	for _, route := range e.Server.Routes() {
		if !slices.Contains(admin, route) && !strings.Contains(route, " /v1/admin/") {
			continue
		}
		checked++
		method, pattern, _ := strings.Cut(route, " ")
		path := strings.ReplaceAll(pattern, "{id}", sku.ID.String())
		t.Run("user on "+route, func(t *testing.T) {
			resp, body := e.do(t, method, path, alice.Token, map[string]any{"quantity": 5, "price": 1})
			if p := wantProblem(t, resp, body, http.StatusForbidden); p.Type != "/problems/forbidden" {
				t.Errorf("problem type %q", p.Type)
			}
		})
	}
	if checked < 2 {
		t.Errorf("only %d admin routes found among %v", checked, e.Server.Routes())
	}
	e.assertUnchanged(t, before)
	if got := e.commandCount(t); got != cmds {
		t.Errorf("%d commands after users called admin routes, want %d", got, cmds)
	}
}

// uuidIn returns the first UUID in path.
func uuidIn(t *testing.T, path string) string {
	t.Helper()
	for _, part := range strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '?' }) {
		if _, err := uuid.Parse(part); err == nil && len(part) == 36 {
			return part
		}
	}
	t.Fatalf("no uuid in %s", path)
	return ""
}

// TestAuthHostileTokens extends TestAuthRefusesBadTokens with the tokens an
// attacker crafts: other algorithms with keys of their own, claims of the
// wrong type, a huge subject, times just past the leeway.
func TestAuthHostileTokens(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	valid := claims("alice", now.Add(-time.Minute), now.Add(time.Hour))
	raw := func(header, payload string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(header)) + "." + enc([]byte(payload)) + "."
	}
	tokens := map[string]string{
		"RS256 with a key of its own":  sign(t, jwt.SigningMethodRS256, rsaKey, valid),
		"ES256 with a key of its own":  sign(t, jwt.SigningMethodES256, ecKey, valid),
		"alg none, no signature":       raw(`{"alg":"none","typ":"JWT"}`, fmt.Sprintf(`{"sub":"alice","exp":%d}`, now.Add(time.Hour).Unix())),
		"alg None":                     raw(`{"alg":"None","typ":"JWT"}`, fmt.Sprintf(`{"sub":"alice","exp":%d,"admin":true}`, now.Add(time.Hour).Unix())),
		"expired beyond the leeway":    sign(t, jwt.SigningMethodHS256, e.Secret, claims("alice", now.Add(-time.Hour), now.Add(-30*time.Second))),
		"not before beyond the leeway": sign(t, jwt.SigningMethodHS256, e.Secret, claims("alice", now.Add(30*time.Second), now.Add(time.Hour))),
		"sub as a number":              signMap(t, e.Secret, map[string]any{"sub": 42, "exp": now.Add(time.Hour).Unix()}),
		"admin as a string":            signMap(t, e.Secret, map[string]any{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "admin": "true"}),
		"huge sub (32 KiB)":            sign(t, jwt.SigningMethodHS256, e.Secret, claims(strings.Repeat("u", 32<<10), now.Add(-time.Minute), now.Add(time.Hour))),
		"empty secret":                 sign(t, jwt.SigningMethodHS256, []byte{}, valid),
		"two tokens":                   sign(t, jwt.SigningMethodHS256, e.Secret, valid) + " " + sign(t, jwt.SigningMethodHS256, e.Secret, valid),
	}
	before := e.snapshot(t)
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/v1/cart", "/v1/orders"} {
				resp, body := e.do(t, "GET", path, tok, nil)
				wantProblem(t, resp, body, http.StatusUnauthorized)
				if bytes.Contains(body, []byte(tok)) {
					t.Errorf("the answer echoes the token")
				}
			}
			resp, body := e.do(t, "POST", "/v1/skus", tok, newSKU("Phone", 100, 1))
			wantProblem(t, resp, body, http.StatusUnauthorized)
		})
	}
	e.assertUnchanged(t, before)
	// Just inside the leeway passes: the leeway is small, not absent.
	inLeeway := sign(t, jwt.SigningMethodHS256, e.Secret, claims("alice", time.Now().Add(-time.Hour), time.Now().Add(-time.Second)))
	e.mustDo(t, "GET", "/v1/cart", inLeeway, nil, http.StatusOK, nil)
}

func signMap(t *testing.T, secret []byte, m map[string]any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(m)).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHostileRequests sends what an attacker would: ids that would be
// wildcards or tokens in a NATS subject, numbers that overflow, negative
// quantities, prices the client has no business sending, oversized bodies,
// broken Last-Event-IDs. Each must be a 4xx problem, and the stored state and
// the command stream must not change.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	sku := e.createSKU(t, newSKU("Target", 1500, 100))
	b := e.newBuyer(t)
	a := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	admin := e.adminToken(t)
	item := func(extra string) string {
		return fmt.Sprintf(`{"address_id":%q,"payment_method":"card","items":[{"sku_id":%q,"quantity":1%s}]}`, b.Address, sku.ID, extra)
	}
	qty := func(q string) string {
		return fmt.Sprintf(`{"address_id":%q,"payment_method":"card","items":[{"sku_id":%q,"quantity":%s}]}`, b.Address, sku.ID, q)
	}
	top := func(extra string) string {
		return fmt.Sprintf(`{"address_id":%q,"payment_method":"card","items":[{"sku_id":%q,"quantity":1}]%s}`, b.Address, sku.ID, extra)
	}
	huge := `{"address_id":"` + b.Address.String() + `","payment_method":"card","items":[` +
		strings.Repeat(`{"sku_id":"`+sku.ID.String()+`","quantity":1},`, 999) + `{"sku_id":"` + sku.ID.String() + `","quantity":1}]}`
	orderPath := "/v1/orders/" + a.OrderID.String()

	cases := []struct {
		name         string
		method, path string
		token        string
		body         string
		header       http.Header
		want         int
		undocumented bool // the OpenAPI document does not list this status yet
	}{
		// Ids that would be NATS wildcards, tokens or escapes.
		{name: "order id *", method: "GET", path: "/v1/orders/*", want: 404},
		{name: "order id >", method: "GET", path: "/v1/orders/%3E", want: 404},
		{name: "order id a.b", method: "GET", path: "/v1/orders/a.b", want: 404},
		{name: "order id %2A", method: "GET", path: "/v1/orders/%252A", want: 404},
		{name: "order id with a dot suffix", method: "GET", path: orderPath + ".x", want: 404},
		{name: "events of order *", method: "GET", path: "/v1/orders/*/events", want: 404},
		{name: "cancel order >", method: "POST", path: "/v1/orders/%3E/cancel", want: 404},
		{name: "cancel order a.b", method: "POST", path: "/v1/orders/a.b/cancel", want: 404},
		{name: "cart item *", method: "PUT", path: "/v1/cart/items/*", body: `{"quantity":1}`, want: 404},
		{name: "cart item a.b", method: "DELETE", path: "/v1/cart/items/a.b", want: 404},
		{name: "address >", method: "GET", path: "/v1/addresses/%3E", want: 404},
		{name: "restock sku *", method: "POST", path: "/v1/skus/*/restock", token: admin, body: `{"quantity":1}`, want: 404},
		{name: "restock sku a.b", method: "POST", path: "/v1/skus/a.b/restock", token: admin, body: `{"quantity":1}`, want: 404},
		{name: "sku >", method: "GET", path: "/v1/skus/%3E", want: 404},
		{name: "checkout sku_id *", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"address_id":%q,"payment_method":"card","items":[{"sku_id":"*","quantity":1}]}`, b.Address), want: 422},
		{name: "checkout sku_id orders.>", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"address_id":%q,"payment_method":"card","items":[{"sku_id":"orders.>","quantity":1}]}`, b.Address), want: 422},
		{name: "checkout address_id a.b", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"address_id":"a.b","payment_method":"card","items":[{"sku_id":%q,"quantity":1}]}`, sku.ID), want: 422},
		{name: "checkout payment_method *", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"address_id":%q,"payment_method":"*","items":[{"sku_id":%q,"quantity":1}]}`, b.Address, sku.ID), want: 422},

		// Numbers. A number of the wrong type (a float, one that
		// overflows int64) is a field error: 422, naming the field.
		{name: "quantity 1e309", method: "POST", path: "/v1/orders", body: qty("1e309"), want: 422},
		{name: "quantity 2^63", method: "POST", path: "/v1/orders", body: qty("9223372036854775808"), want: 422},
		{name: "quantity 2^63-1", method: "POST", path: "/v1/orders", body: qty("9223372036854775807"), want: 422},
		{name: "quantity 1.5", method: "POST", path: "/v1/orders", body: qty("1.5"), want: 422},
		{name: "quantity 0", method: "POST", path: "/v1/orders", body: qty("0"), want: 422},
		{name: "quantity -1", method: "POST", path: "/v1/orders", body: qty("-1"), want: 422},
		{name: "quantity -2^63", method: "POST", path: "/v1/orders", body: qty("-9223372036854775808"), want: 422},
		{name: "quantity as a string", method: "POST", path: "/v1/orders", body: qty(`"1"`), want: 422},
		{name: "cart quantity 1e309", method: "PUT", path: "/v1/cart/items/" + sku.ID.String(), body: `{"quantity":1e309}`, want: 422},
		{name: "cart quantity 2^63", method: "PUT", path: "/v1/cart/items/" + sku.ID.String(), body: `{"quantity":9223372036854775808}`, want: 422},
		{name: "cart quantity -1", method: "PUT", path: "/v1/cart/items/" + sku.ID.String(), body: `{"quantity":-1}`, want: 422},
		{name: "cart quantity 0", method: "PUT", path: "/v1/cart/items/" + sku.ID.String(), body: `{"quantity":0}`, want: 422},
		{name: "restock 2^63", method: "POST", path: "/v1/skus/" + sku.ID.String() + "/restock", token: admin, body: `{"quantity":9223372036854775808}`, want: 422},
		{name: "restock -5", method: "POST", path: "/v1/skus/" + sku.ID.String() + "/restock", token: admin, body: `{"quantity":-5}`, want: 422},
		{name: "restock 2^63-1", method: "POST", path: "/v1/skus/" + sku.ID.String() + "/restock", token: admin, body: `{"quantity":9223372036854775807}`, want: 422},

		// Prices and totals are the server's, never the client's.
		{name: "line price", method: "POST", path: "/v1/orders", body: item(`,"price":1`), want: 400},
		{name: "line unit_price", method: "POST", path: "/v1/orders", body: item(`,"unit_price":1`), want: 400},
		{name: "line line_total", method: "POST", path: "/v1/orders", body: item(`,"line_total":1`), want: 400},
		{name: "grand_total", method: "POST", path: "/v1/orders", body: top(`,"grand_total":1`), want: 400},
		{name: "subtotal", method: "POST", path: "/v1/orders", body: top(`,"subtotal":0`), want: 400},
		{name: "shipping_fee", method: "POST", path: "/v1/orders", body: top(`,"shipping_fee":0`), want: 400},
		{name: "status", method: "POST", path: "/v1/orders", body: top(`,"status":"confirmed"`), want: 400},
		{name: "user_id", method: "POST", path: "/v1/orders", body: top(`,"user_id":"someone-else"`), want: 400},
		{name: "order_id", method: "POST", path: "/v1/orders", body: top(`,"order_id":"` + uuid.NewString() + `"`), want: 400},
		{name: "a key in another case", method: "POST", path: "/v1/orders", body: top(`,"Grand_Total":1`), want: 400},
		{name: "a duplicate key", method: "POST", path: "/v1/orders", body: top(`,"payment_method":"invoice"`), want: 422},
		{name: "preview with a price", method: "POST", path: "/v1/checkout/preview", body: item(`,"unit_price":1`), want: 400},
		{name: "cart with a price", method: "PUT", path: "/v1/cart/items/" + sku.ID.String(), body: `{"quantity":1,"price":1}`, want: 400},

		// Sizes and shapes.
		{name: "oversized body", method: "POST", path: "/v1/orders", body: huge + strings.Repeat(" ", MaxBodyBytes), want: 413},
		{name: "1000 lines", method: "POST", path: "/v1/orders", body: huge, want: 422},
		{name: "deep nesting", method: "POST", path: "/v1/orders", body: strings.Repeat("[", 10000) + strings.Repeat("]", 10000), want: 400},
		{name: "two bodies", method: "POST", path: "/v1/orders", body: top("") + top(""), want: 400},
		{name: "NUL bytes", method: "POST", path: "/v1/orders", body: "{\x00}", want: 400},
		{name: "Idempotency-Key with control characters", method: "POST", path: "/v1/orders", body: top(""), header: http.Header{"Idempotency-Key": {"a\tb"}}, want: 422},
		{name: "Idempotency-Key too long", method: "POST", path: "/v1/orders", body: top(""), header: http.Header{"Idempotency-Key": {strings.Repeat("k", 256)}}, want: 422},

		// Last-Event-ID of the order's stream.
		{name: "Last-Event-ID *", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"*"}}, want: 400},
		{name: "Last-Event-ID a number", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"99999999999999999999"}}, want: 400},
		{name: "Last-Event-ID negative", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"-1"}}, want: 400},
		{name: "Last-Event-ID a.b", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"pending.>"}}, want: 400},
		{name: "Last-Event-ID huge", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {strings.Repeat("x", 8<<10)}}, want: 400},
	}
	before, cmds := e.snapshot(t), e.commandCount(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := c.token
			if tok == "" {
				tok = b.Token
			}
			var body any
			if c.body != "" {
				body = c.body
			}
			e.checkOpenAPI = !c.undocumented
			defer func() { e.checkOpenAPI = true }()
			resp, data := e.doHeaders(t, c.method, c.path, tok, body, c.header)
			p := wantProblem(t, resp, data, c.want)
			if len(p.Detail) > 512 {
				t.Errorf("problem detail of %d bytes: a hostile input must not be echoed whole", len(p.Detail))
			}
		})
	}
	e.assertUnchanged(t, before)
	if got := e.commandCount(t); got != cmds {
		t.Errorf("%d commands after hostile requests, want %d", got, cmds)
	}
}

// TestNoSecretsInLogs: failed authentications, at the most verbose level,
// log neither the token nor the secret.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var buf bytes.Buffer
	e := newTestEnv(t, func(_ *testEnv, _ *Config, d *Deps) {
		d.Log = slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	now := time.Now()
	expired, err := auth.Mint(e.Secret, "alice", false, -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []string{
		expired,
		sign(t, jwt.SigningMethodHS256, []byte("attacker-secret-0123456789abcdef"), claims("alice", now.Add(-time.Minute), now.Add(time.Hour))),
		tamper(sign(t, jwt.SigningMethodHS256, e.Secret, claims("alice", now.Add(-time.Minute), now.Add(time.Hour)))),
		"not-a-jwt-but-secret-looking-0123456789",
	}
	for _, tok := range tokens {
		for _, path := range []string{"/v1/cart", "/v1/orders", "/v1/skus"} {
			resp, body := e.do(t, "GET", path, tok, nil)
			wantProblem(t, resp, body, http.StatusUnauthorized)
		}
		resp, body := e.do(t, "POST", "/v1/orders", tok, `{}`)
		wantProblem(t, resp, body, http.StatusUnauthorized)
	}
	// A request that fails inside, after authentication, logs too.
	good := e.token(t, "alice")
	e.do(t, "GET", "/v1/cart", good, nil)

	mu.Lock()
	logs := buf.String()
	mu.Unlock()
	for _, tok := range append(tokens, good) {
		for _, part := range strings.Split(tok, ".") {
			if len(part) >= 16 && strings.Contains(logs, part) {
				t.Errorf("the log holds part of a token (%q):\n%s", part, logs)
			}
		}
	}
	if strings.Contains(logs, string(e.Secret)) {
		t.Errorf("the log holds the JWT secret:\n%s", logs)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
