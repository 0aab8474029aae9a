package ingress

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// streamCounts returns the messages on every JetStream stream of the env:
// commands, events and dead letters.
func (e *orderEnv) streamCounts(t testing.TB) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	out := map[string]uint64{}
	names := e.JS.StreamNames(ctx)
	for name := range names.Name() {
		s, err := e.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info.State.Msgs
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 2 {
		t.Fatalf("only the streams %v", out)
	}
	return out
}

// TestHostileRequestsMore extends TestHostileRequests to every write route
// and to the query parameters: unknown fields and oversized bodies on each
// route that reads a body, numbers past their bounds on the admin's
// routes, malformed ?wait=, ?since=, ?limit=, ?cursor=, ?after= and
// ?before=, more broken Last-Event-IDs, and payment webhooks with bad
// signatures. Each is a 4xx problem of the given status; afterwards
// PostgreSQL, Redis and every stream (commands, events, dead letters) are
// as they were.
func TestHostileRequestsMore(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withPayments, withAdminOps, func(_ *orderEnv, _ *Config, d *Deps) {
		d.SKUAdmin = d.SKUs.(SKUAdminStore)
		d.DeadLetters = d.Orders.(*postgres.DB)
	})
	sku := e.createSKU(t, newSKU("Target", 1500, 100))
	b := e.newBuyer(t)
	a := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	confirmed := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	e.getOrder(t, b, confirmed.ID, http.StatusOK) // caches it: a read, not a change
	admin := e.adminToken(t)
	skuPath := "/v1/skus/" + sku.ID.String()
	cartPath := "/v1/cart/items/" + sku.ID.String()
	orderPath := "/v1/orders/" + a.OrderID.String()
	big := func(prefix string) string { // a valid start, then more than MaxBodyBytes
		return prefix + `"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	}
	addr := `{"recipient":"A","line1":"1 Road","city":"Paris","postal_code":"75001","country":"FR"`
	paySig := func(body string, at time.Time) string { return Sign(testWebhookSecret, at, []byte(body)) }
	pay := string(payBody(confirmed, "pi_hostile"))
	valid := paySig(pay, time.Now())
	v1 := valid[strings.Index(valid, "v1="):]
	wildPay := `{"order_id":"*","amount":1,"currency":"EUR","provider_ref":"x"}`

	cases := []struct {
		name         string
		method, path string
		admin, anon  bool
		body         string
		header       http.Header
		want         int
	}{
		// Unknown fields: a typo or an injected price is refused, on
		// every route with a body.
		{name: "address with is_default", method: "POST", path: "/v1/addresses", body: addr + `,"is_default":true}`, want: 400},
		{name: "address with user_id", method: "POST", path: "/v1/addresses", body: addr + `,"user_id":"someone"}`, want: 400},
		{name: "cart with unit_price", method: "PUT", path: cartPath, body: `{"quantity":1,"unit_price":1}`, want: 400},
		{name: "preview with grand_total", method: "POST", path: "/v1/checkout/preview", body: `{"items":[{"sku_id":"` + sku.ID.String() + `","quantity":1}],"grand_total":1}`, want: 400},
		{name: "preview with shipping_fee", method: "POST", path: "/v1/checkout/preview", body: `{"items":[{"sku_id":"` + sku.ID.String() + `","quantity":1}],"shipping_fee":0}`, want: 400},
		{name: "sku with sold", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":1,"currency":"EUR","stock":1,"sold":5}`, want: 400},
		{name: "restock with price", method: "POST", path: skuPath + "/restock", admin: true, body: `{"quantity":1,"price":1}`, want: 400},
		{name: "patch with stock", method: "PATCH", path: skuPath, admin: true, body: `{"stock":1000000}`, want: 422}, // named: stock moves by restock
		{name: "patch with id", method: "PATCH", path: skuPath, admin: true, body: `{"id":"` + uuid.NewString() + `"}`, want: 400},

		// Oversized bodies, on every route with a body.
		{name: "oversized address", method: "POST", path: "/v1/addresses", body: big(`{"recipient":`), want: 413},
		{name: "oversized cart item", method: "PUT", path: cartPath, body: big(`{"x":`), want: 413},
		{name: "oversized preview", method: "POST", path: "/v1/checkout/preview", body: big(`{"x":`), want: 413},
		{name: "oversized sku", method: "POST", path: "/v1/skus", admin: true, body: big(`{"name":`), want: 413},
		{name: "oversized restock", method: "POST", path: skuPath + "/restock", admin: true, body: big(`{"x":`), want: 413},
		{name: "oversized patch", method: "PATCH", path: skuPath, admin: true, body: big(`{"name":`), want: 413},

		// Types and bounds on the admin's numbers.
		{name: "sku price 2^63", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":9223372036854775808,"currency":"EUR","stock":1}`, want: 422},
		{name: "sku price -1", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":-1,"currency":"EUR","stock":1}`, want: 422},
		{name: "sku stock 1e309", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":1,"currency":"EUR","stock":1e309}`, want: 422},
		{name: "sku stock as a string", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":1,"currency":"EUR","stock":"1"}`, want: 422},
		{name: "sku per_user_limit -1", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":1,"currency":"EUR","stock":1,"per_user_limit":-1}`, want: 422},
		{name: "sku hold 2^63", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":1,"currency":"EUR","stock":1,"payment_hold_seconds":9223372036854775807}`, want: 422},
		{name: "sku currency *", method: "POST", path: "/v1/skus", admin: true, body: `{"name":"X","price":1,"currency":"*","stock":1}`, want: 422},
		{name: "patch price 2^63", method: "PATCH", path: skuPath, admin: true, body: `{"price":9223372036854775808}`, want: 422},
		{name: "patch price 0.5", method: "PATCH", path: skuPath, admin: true, body: `{"price":0.5}`, want: 422},
		{name: "patch per_user_limit -1", method: "PATCH", path: skuPath, admin: true, body: `{"per_user_limit":-1}`, want: 422},
		{name: "restock 0", method: "POST", path: skuPath + "/restock", admin: true, body: `{"quantity":0}`, want: 422},
		{name: "restock 1.5", method: "POST", path: skuPath + "/restock", admin: true, body: `{"quantity":1.5}`, want: 422},
		{name: "cart quantity 1.5", method: "PUT", path: cartPath, body: `{"quantity":1.5}`, want: 422},
		{name: "cart quantity null", method: "PUT", path: cartPath, body: `{"quantity":null}`, want: 422},
		{name: "address country *", method: "POST", path: "/v1/addresses", body: `{"recipient":"A","line1":"1 Road","city":"Paris","postal_code":"75001","country":"*"}`, want: 422},

		// Ids that would be subject wildcards or tokens, in the bodies
		// and paths the first table leaves out.
		{name: "preview sku_id >", method: "POST", path: "/v1/checkout/preview", body: `{"items":[{"sku_id":">","quantity":1}]}`, want: 422},
		{name: "preview cart_sku_ids a.b", method: "POST", path: "/v1/checkout/preview", body: `{"cart_sku_ids":["a.b"]}`, want: 422},
		{name: "checkout cart_sku_ids *", method: "POST", path: "/v1/orders", body: fmt.Sprintf(`{"address_id":%q,"payment_method":"card","cart_sku_ids":["*"]}`, b.Address), want: 422},
		{name: "pause sku >", method: "POST", path: "/v1/skus/%3E/pause", admin: true, want: 404},
		{name: "resume sku a.b", method: "POST", path: "/v1/skus/a.b/resume", admin: true, want: 404},
		{name: "patch sku *", method: "PATCH", path: "/v1/skus/*", admin: true, body: `{"price":1}`, want: 404},
		{name: "audit of sku a.>", method: "GET", path: "/v1/skus/a.%3E/audit", admin: true, want: 404},
		{name: "replay dead letter *", method: "POST", path: "/v1/admin/dead-letters/*/replay", admin: true, want: 404},
		{name: "replay dead letter 2^63", method: "POST", path: "/v1/admin/dead-letters/9223372036854775808/replay", admin: true, want: 404},
		{name: "replay dead letter -1", method: "POST", path: "/v1/admin/dead-letters/-1/replay", admin: true, want: 404},
		{name: "replay dead letter 1.5", method: "POST", path: "/v1/admin/dead-letters/1.5/replay", admin: true, want: 404},
		{name: "replay a dead letter that does not exist", method: "POST", path: "/v1/admin/dead-letters/424242/replay", admin: true, want: 404},
		{name: "payment webhook order_id *, unsigned", method: "POST", path: "/v1/payments/webhook", anon: true,
			body: wildPay, want: 401},
		{name: "payment webhook order_id *, signed", method: "POST", path: "/v1/payments/webhook", anon: true,
			body: wildPay, header: http.Header{SignatureHeader: {paySig(wildPay, time.Now())}}, want: 400},

		// Query parameters.
		{name: "wait 31s", method: "GET", path: orderPath + "?wait=31s", want: 422},
		{name: "wait -1s", method: "GET", path: orderPath + "?wait=-1s", want: 422},
		{name: "wait NaN", method: "GET", path: orderPath + "?wait=NaN", want: 422},
		{name: "wait Inf", method: "GET", path: orderPath + "?wait=Inf", want: 422},
		{name: "wait 1e309", method: "GET", path: orderPath + "?wait=1e309", want: 422},
		{name: "wait 2562047h", method: "GET", path: orderPath + "?wait=2562047h", want: 422},
		{name: "wait *", method: "GET", path: orderPath + "?wait=*", want: 422},
		{name: "since bogus", method: "GET", path: orderPath + "?wait=1s&since=shipped", want: 422},
		{name: "since *", method: "GET", path: orderPath + "?since=*", want: 422},
		{name: "since CONFIRMED", method: "GET", path: orderPath + "?since=CONFIRMED", want: 422},
		{name: "order list limit 0", method: "GET", path: "/v1/orders?limit=0", want: 422},
		{name: "order list limit 2^63", method: "GET", path: "/v1/orders?limit=9223372036854775808", want: 422},
		{name: "order list cursor garbage", method: "GET", path: "/v1/orders?cursor=*", want: 422},
		{name: "order list cursor base64 junk", method: "GET", path: "/v1/orders?cursor=eyJhIjoxfQ", want: 422},
		{name: "order list cursor huge", method: "GET", path: "/v1/orders?cursor=" + strings.Repeat("A", 8<<10), want: 422},
		{name: "sku list after *", method: "GET", path: "/v1/skus?after=*", want: 422},
		{name: "sku list limit -1", method: "GET", path: "/v1/skus?limit=-1", want: 422},
		{name: "dead letters before -1", method: "GET", path: "/v1/admin/dead-letters?before=-1", admin: true, want: 422},
		{name: "dead letters before 2^63", method: "GET", path: "/v1/admin/dead-letters?before=9223372036854775808", admin: true, want: 422},
		{name: "dead letters limit 501", method: "GET", path: "/v1/admin/dead-letters?limit=501", admin: true, want: 422},

		// More broken Last-Event-IDs.
		{name: "Last-Event-ID CONFIRMED", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"CONFIRMED"}}, want: 400},
		{name: "Last-Event-ID two statuses", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"confirmed,paid"}}, want: 400},
		{name: "Last-Event-ID an event uuid", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {uuid.NewString()}}, want: 400},
		{name: "Last-Event-ID orders.events.>", method: "GET", path: orderPath + "/events", header: http.Header{"Last-Event-ID": {"orders.events.>"}}, want: 400},

		// Payment webhooks with bad signatures (TestPaymentWebhookRefusals
		// has the rest).
		{name: "signature empty v1", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {"t=" + fmt.Sprint(time.Now().Unix()) + ",v1="}}, want: 401},
		{name: "signature t not a number", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {"t=abc," + v1}}, want: 401},
		{name: "signature t 2^63", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {"t=9223372036854775808," + v1}}, want: 401},
		{name: "signature t negative", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {"t=-1," + v1}}, want: 401},
		{name: "signature huge", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {"t=1,v1=" + strings.Repeat("ab", 4<<10)}}, want: 401},
		{name: "signature of the body with a space more", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay + " ", header: http.Header{SignatureHeader: {valid}}, want: 401},
		{name: "signature sha1 scheme", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {"t=" + fmt.Sprint(time.Now().Unix()) + ",v0=" + strings.Repeat("ab", 20)}}, want: 401},
		{name: "signature from a minute ago with today's body replayed later", method: "POST", path: "/v1/payments/webhook", anon: true, body: pay, header: http.Header{SignatureHeader: {paySig(pay, time.Now().Add(-10*time.Minute))}}, want: 401},
	}
	before, streams := e.snapshot(t), e.streamCounts(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := b.Token
			switch {
			case c.admin:
				tok = admin
			case c.anon:
				tok = ""
			}
			var body any
			if c.body != "" {
				body = c.body
			}
			resp, data := e.doHeaders(t, c.method, c.path, tok, body, c.header)
			p := wantProblem(t, resp, data, c.want)
			if len(p.Detail) > 512 {
				t.Errorf("problem detail of %d bytes: a hostile input must not be echoed whole", len(p.Detail))
			}
		})
	}
	e.assertUnchanged(t, before)
	if diff := cmp.Diff(streams, e.streamCounts(t)); diff != "" {
		t.Errorf("hostile requests changed the streams (-before +after):\n%s", diff)
	}
}

// TestHostileUserIDs: a token whose subject is a NATS wildcard or holds
// dots (a subject's separators), or a Redis glob, is an ordinary user: it
// sees none of the other users' orders, addresses or cart, and its
// checkout goes to its SKU's partition subject, which names no user.
func TestHostileUserIDs(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	sku := e.createSKU(t, newSKU("Target", 1500, 100))
	victim := e.newBuyer(t)
	e.mustDo(t, "PUT", "/v1/cart/items/"+sku.ID.String(), victim.Token, map[string]any{"quantity": 2}, http.StatusOK, nil)
	e.mustCheckout(t, victim, directBody(victim, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	for _, sub := range []string{"*", ">", "buyer-*", "orders.cmd.>", "a.b", "*.*", "[a-z]*", "?", "\\*"} {
		t.Run(sub, func(t *testing.T) {
			tok := e.token(t, sub)
			var orders struct {
				Items []order.Order `json:"items"`
			}
			e.mustDo(t, "GET", "/v1/orders", tok, nil, http.StatusOK, &orders)
			if len(orders.Items) != 0 {
				t.Errorf("user %q sees %d orders of others", sub, len(orders.Items))
			}
			var addrs struct {
				Items []addressView `json:"items"`
			}
			e.mustDo(t, "GET", "/v1/addresses", tok, nil, http.StatusOK, &addrs)
			if len(addrs.Items) != 0 {
				t.Errorf("user %q sees %d addresses of others", sub, len(addrs.Items))
			}
			var cart struct {
				Items []any `json:"items"`
			}
			e.mustDo(t, "GET", "/v1/cart", tok, nil, http.StatusOK, &cart)
			if len(cart.Items) != 0 {
				t.Errorf("user %q sees a cart of %d items", sub, len(cart.Items))
			}
			// Its own checkout lands on the SKU's partition subject.
			a := e.createAddress(t, tok, newAddress("Eve"))
			acc := e.mustCheckout(t, buyer{ID: sub, Token: tok, Address: a.ID}, map[string]any{
				"address_id": a.ID, "payment_method": "card", "items": []order.LineRequest{{SKUID: sku.ID, Quantity: 1}}}, "")
			found := false
			for _, c := range e.commands(t) {
				if c.Checkout != nil && c.Checkout.OrderID == acc.OrderID {
					found = true
					if c.Partition != order.Partition(sku.ID, e.Server.cfg.Partitions) || c.Checkout.UserID != sub {
						t.Errorf("command %+v", c.Command)
					}
				}
			}
			if !found {
				t.Errorf("the checkout of %q is not on its partition's subject", sub)
			}
		})
	}
	// The victim's things are untouched.
	var cart struct {
		Items []struct {
			Quantity int64 `json:"quantity"`
		} `json:"items"`
	}
	e.mustDo(t, "GET", "/v1/cart", victim.Token, nil, http.StatusOK, &cart)
	if len(cart.Items) != 1 || cart.Items[0].Quantity != 2 {
		t.Errorf("the victim's cart is %+v", cart.Items)
	}
}
