package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

func TestCheckoutDirectPublishesOneCommand(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Hot sneaker", 12000, 10))
	before := time.Now().UTC().Add(-time.Second)

	resp, data := e.checkout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 2}), "")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202; body %s", resp.StatusCode, data)
	}
	var a accepted
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatal(err)
	}
	if got, want := resp.Header.Get("Location"), "/v1/orders/"+a.OrderID.String(); got != want {
		t.Errorf("Location %q, want %q", got, want)
	}
	if diff := cmp.Diff(linksOf(a.OrderID), a.Links); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
	if a.Status != order.StatusPending || !strings.HasPrefix(a.OrderNumber, "FS-") {
		t.Errorf("answer %+v: want pending with an FS- number", a)
	}

	cmds := e.commands(t)
	if len(cmds) != 1 {
		t.Fatalf("%d commands on ORDER_CMDS, want 1", len(cmds))
	}
	c := cmds[0]
	lines := []order.LineRequest{{SKUID: sku.ID, Quantity: 2}}
	want := order.Command{
		ID: a.OrderID, Kind: order.KindCheckout, Partition: order.HomePartition(lines, 4), At: c.At,
		Checkout: &order.Checkout{
			OrderID: a.OrderID, OrderNumber: a.OrderNumber, UserID: b.ID, AddressID: b.Address,
			PaymentMethod: order.PayCard, Lines: lines, ShippingFee: testShippingFee,
			RequestHash: c.Checkout.RequestHash, Prices: map[uuid.UUID]int64{sku.ID: 12000},
		},
	}
	if diff := cmp.Diff(want, c.Command); diff != "" {
		t.Errorf("command (-want +got):\n%s", diff)
	}
	if c.MsgID != a.OrderID.String() {
		t.Errorf("Nats-Msg-Id %q, want the order id", c.MsgID)
	}
	if c.At.Before(before) || c.At.After(time.Now()) || len(c.Checkout.RequestHash) != 64 {
		t.Errorf("command at %s with hash %q", c.At, c.Checkout.RequestHash)
	}

	// No worker runs: the order is pending, not 404.
	o := e.getOrder(t, b, a.OrderID, http.StatusOK)
	wantStatus(t, o, order.StatusPending)
	if o.Number != a.OrderNumber || o.UserID != b.ID || len(o.Lines) != 1 || o.Lines[0].Quantity != 2 || !o.AcceptedAt.Equal(c.At) {
		t.Errorf("pending order %+v does not match the command", o)
	}

	// A second order gets another id and number.
	a2 := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 2}), "")
	if a2.OrderID == a.OrderID || a2.OrderNumber == a.OrderNumber {
		t.Errorf("two orders share an id or number: %+v %+v", a, a2)
	}
	if n := e.commandCount(t); n != 2 {
		t.Errorf("%d commands, want 2", n)
	}
}

func TestCheckoutFromCartSnapshotsQuantities(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	s1 := e.createSKU(t, newSKU("One", 100, 10))
	s2 := e.createSKU(t, newSKU("Two", 200, 10))
	e.mustDo(t, "PUT", "/v1/cart/items/"+s1.ID.String(), b.Token, map[string]int{"quantity": 3}, http.StatusOK, nil)
	e.mustDo(t, "PUT", "/v1/cart/items/"+s2.ID.String(), b.Token, map[string]int{"quantity": 1}, http.StatusOK, nil)

	a := e.mustCheckout(t, b, map[string]any{"address_id": b.Address, "payment_method": "wallet", "cart_sku_ids": []uuid.UUID{s2.ID, s1.ID}}, "")
	cmds := e.commands(t)
	if len(cmds) != 1 {
		t.Fatalf("%d commands, want 1", len(cmds))
	}
	c := cmds[0].Checkout
	want := []order.LineRequest{{SKUID: s2.ID, Quantity: 1}, {SKUID: s1.ID, Quantity: 3}}
	if diff := cmp.Diff(want, c.Lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if !c.FromCart || c.PaymentMethod != order.PayWallet || c.OrderID != a.OrderID {
		t.Errorf("checkout %+v: want from the cart, by wallet", c)
	}
	if cmds[0].Partition != order.Partition(s2.ID, 4) {
		t.Errorf("partition %d, want the first line's", cmds[0].Partition)
	}
	// The cart keeps the SKUs until the order is confirmed.
	if items := e.getCart(t, b.Token); len(items) != 2 {
		t.Errorf("cart holds %d items after checkout, want 2", len(items))
	}
}

func TestCheckoutRefusesBadRequests(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	other := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	inCart := e.createSKU(t, newSKU("In cart", 100, 10))
	zero := e.createSKU(t, newSKU("Zero in cart", 100, 10))
	paused := e.createSKU(t, newSKU("Paused", 100, 10))
	if _, err := e.DB.Exec(`UPDATE skus SET paused = true WHERE id = $1`, paused.ID); err != nil {
		t.Fatal(err)
	}
	e.setCart(t, b.ID, inCart.ID, "2")
	e.setCart(t, b.ID, zero.ID, "0")
	line := []order.LineRequest{{SKUID: sku.ID, Quantity: 1}}
	body := func(mod func(m map[string]any)) map[string]any {
		m := directBody(b, line...)
		mod(m)
		return m
	}
	cases := []struct {
		name   string
		body   any
		key    string
		status int
		fields []string
	}{
		{"another user's address", body(func(m map[string]any) { m["address_id"] = other.Address }), "", 422, []string{"address_id"}},
		{"unknown address", body(func(m map[string]any) { m["address_id"] = uuid.New() }), "", 422, []string{"address_id"}},
		{"no address", body(func(m map[string]any) { delete(m, "address_id") }), "", 422, []string{"address_id"}},
		{"unsupported payment method", body(func(m map[string]any) { m["payment_method"] = "iou" }), "", 422, []string{"payment_method"}},
		{"no payment method", body(func(m map[string]any) { delete(m, "payment_method") }), "", 422, []string{"payment_method"}},
		{"no lines", body(func(m map[string]any) { m["items"] = []any{} }), "", 422, []string{"items"}},
		{"quantity 0", body(func(m map[string]any) { m["items"] = []order.LineRequest{{SKUID: sku.ID}} }), "", 422, []string{"items[0].quantity"}},
		{"negative quantity", body(func(m map[string]any) { m["items"] = []order.LineRequest{{SKUID: sku.ID, Quantity: -1}} }), "", 422, []string{"items[0].quantity"}},
		{"quantity over the line maximum", body(func(m map[string]any) {
			m["items"] = []order.LineRequest{{SKUID: sku.ID, Quantity: order.MaxLineQty + 1}}
		}), "", 422, []string{"items[0].quantity"}},
		{"fractional quantity", `{"address_id":"` + b.Address.String() + `","payment_method":"card","items":[{"sku_id":"` + sku.ID.String() + `","quantity":1.5}]}`, "", 422, nil},
		{"no SKU id", body(func(m map[string]any) { m["items"] = []map[string]int{{"quantity": 1}} }), "", 422, []string{"items[0].sku_id"}},
		{"SKU twice", body(func(m map[string]any) {
			m["items"] = []order.LineRequest{{SKUID: sku.ID, Quantity: 1}, {SKUID: sku.ID, Quantity: 1}}
		}), "", 422, []string{"items[1].sku_id"}},
		{"items and cart_sku_ids", body(func(m map[string]any) { m["cart_sku_ids"] = []uuid.UUID{inCart.ID} }), "", 422, []string{"items", "cart_sku_ids"}},
		{"neither items nor cart_sku_ids", body(func(m map[string]any) { delete(m, "items") }), "", 422, []string{"items", "cart_sku_ids"}},
		{"SKU not in the cart", body(func(m map[string]any) { delete(m, "items"); m["cart_sku_ids"] = []uuid.UUID{inCart.ID, sku.ID} }), "", 422, []string{"cart_sku_ids[1]"}},
		{"SKU with quantity 0 in the cart", body(func(m map[string]any) { delete(m, "items"); m["cart_sku_ids"] = []uuid.UUID{zero.ID} }), "", 422, []string{"cart_sku_ids[0]"}},
		{"empty cart_sku_ids", body(func(m map[string]any) { delete(m, "items"); m["cart_sku_ids"] = []uuid.UUID{} }), "", 422, []string{"cart_sku_ids"}},
		{"bad address and SKU not in the cart", body(func(m map[string]any) {
			delete(m, "items")
			m["cart_sku_ids"] = []uuid.UUID{sku.ID}
			m["address_id"] = other.Address
		}), "", 422, []string{"address_id", "cart_sku_ids[0]"}},
		{"Idempotency-Key too long", body(func(map[string]any) {}), strings.Repeat("k", 256), 422, []string{"Idempotency-Key"}},
		{"Idempotency-Key not ASCII", body(func(map[string]any) {}), "clé", 422, []string{"Idempotency-Key"}},
		{"bad key and the cart check", body(func(m map[string]any) { delete(m, "items"); m["cart_sku_ids"] = []uuid.UUID{sku.ID} }), "a\tb", 422, []string{"Idempotency-Key"}},
		{"key with another user's address", body(func(m map[string]any) { m["address_id"] = other.Address }), "key-1", 422, []string{"address_id"}},
		{"paused SKU", body(func(m map[string]any) { m["items"] = []order.LineRequest{{SKUID: paused.ID, Quantity: 1}} }), "", 409, nil},
		{"unknown field", body(func(m map[string]any) { m["price"] = 1 }), "", 400, nil},
		{"not JSON", `{"address_id":`, "", 400, nil},
		{"empty body", "", "", 400, nil},
		{"trailing data", `{"address_id":"` + b.Address.String() + `","payment_method":"card","items":[]} {}`, "", 400, nil},
		{"too large", `{"address_id":"` + strings.Repeat(" ", MaxBodyBytes) + `"}`, "", 413, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.snapshot(t)
			cmds := e.commandCount(t)
			h := http.Header{}
			if c.key != "" {
				h["Idempotency-Key"] = []string{c.key}
			}
			var reqBody any = c.body
			if c.body == "" {
				reqBody = strings.NewReader("")
			}
			resp, data := e.doHeaders(t, "POST", "/v1/orders", b.Token, reqBody, h)
			p := wantProblem(t, resp, data, c.status)
			for _, f := range c.fields {
				if !p.hasField(f) {
					t.Errorf("problem %s does not name field %s", data, f)
				}
			}
			if c.status == 409 && !strings.HasSuffix(p.Type, "sale-paused") {
				t.Errorf("problem type %q, want .../sale-paused", p.Type)
			}
			if n := e.commandCount(t); n != cmds {
				t.Errorf("%d commands after the request, want %d: nothing published", n, cmds)
			}
			e.assertUnchanged(t, before)
		})
	}
}

func TestCheckoutNeedsAUser(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	resp, data := e.do(t, "POST", "/v1/orders", "", directBody(b, order.LineRequest{SKUID: uuid.New(), Quantity: 1}))
	wantProblem(t, resp, data, http.StatusUnauthorized)
}

func TestCheckoutJetStreamDown(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	e.mustCheckout(t, b, body, "") // the path works while it is up
	e.NATS.Shutdown()
	e.NATS.WaitForShutdown()

	t.Run("without a key nothing is cached", func(t *testing.T) {
		before := e.snapshot(t)
		start := time.Now()
		resp, data := e.checkout(t, b, body, "")
		wantProblem(t, resp, data, http.StatusServiceUnavailable)
		if resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("answered after %s: the publish timeout is 1s", d)
		}
		e.assertUnchanged(t, before)
	})
	t.Run("with a key no order is visible", func(t *testing.T) {
		resp, data := e.checkout(t, b, body, "down-key")
		wantProblem(t, resp, data, http.StatusServiceUnavailable)
		if resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		id := order.IdempotentID(b.ID, "down-key")
		e.getOrder(t, b, id, http.StatusNotFound)
		var list orderPage
		e.mustDo(t, "GET", "/v1/orders", b.Token, nil, http.StatusOK, &list)
		for _, o := range list.Items {
			if o.ID == id {
				t.Error("the failed order is listed")
			}
		}
		// Only the record that lets a retry reuse the same command remains.
		rec, err := e.Redis.Idempotency(context.Background(), id)
		if err != nil || rec.Published {
			t.Errorf("idempotency record %+v, %v: want one, not published", rec, err)
		}
		if n, _ := e.Redis.Client().Exists(context.Background(), e.redisKey("idemlock:"+id.String())).Result(); n != 0 {
			t.Error("the idempotency lock is still held")
		}
	})
}

// stopJetStream is a Publisher that shuts the NATS server down as the
// command is being published: JetStream goes away mid-request.
type stopJetStream struct {
	next Publisher
	stop func()
}

func (p *stopJetStream) Publish(ctx context.Context, cmd order.Command) error {
	p.stop()
	return p.next.Publish(ctx, cmd)
}

func TestCheckoutJetStreamStopsMidRequest(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, func(e *orderEnv, _ *Config, d *Deps) {
		d.Publisher = &stopJetStream{next: d.Publisher, stop: func() { e.NATS.Shutdown(); e.NATS.WaitForShutdown() }}
	})
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	before := e.snapshot(t)
	resp, data := e.checkout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	wantProblem(t, resp, data, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	// The pending order was cached before the publish and is gone again.
	e.assertUnchanged(t, before)
}

func TestCheckoutWithBatchPublisher(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, func(e *orderEnv, cfg *Config, d *Deps) {
		// The publisher orderd uses with PUBLISH_BATCH: a lone command keeps
		// its id as the Nats-Msg-Id.
		bp := natsbus.NewBatchPublisher(e.JS, natsbus.BatchConfig{Partitions: cfg.Partitions, Timeout: time.Second})
		t.Cleanup(bp.Close)
		d.Publisher = bp
	})
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	a := e.mustCheckout(t, b, body, "batch-key")
	rec, err := e.Redis.Idempotency(context.Background(), a.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	rec.Published = false // as if the ingress died before it marked it
	if err := e.Redis.PutIdempotency(context.Background(), a.OrderID, rec); err != nil {
		t.Fatal(err)
	}
	if again := e.mustCheckout(t, b, body, "batch-key"); again != a {
		t.Errorf("retry %+v, want %+v", again, a)
	}
	cmds := e.commands(t)
	if len(cmds) != 1 || cmds[0].ID != a.OrderID {
		t.Errorf("commands %+v: want the one checkout", cmds)
	}
}
