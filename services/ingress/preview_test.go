package ingress

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// previewAnswer is the preview's JSON as a client reads it.
type previewAnswer struct {
	Items       []order.Line `json:"items"`
	ItemCount   int64        `json:"item_count"`
	Subtotal    int64        `json:"subtotal"`
	ShippingFee int64        `json:"shipping_fee"`
	GrandTotal  int64        `json:"grand_total"`
	Currency    string       `json:"currency"`
	Address     *addressView `json:"address"`
}

func line(id uuid.UUID, q any) map[string]any { return map[string]any{"sku_id": id, "quantity": q} }

func TestPreviewDirect(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	phone := e.createSKU(t, newSKU("Phone", 49900, 10))
	case_ := e.createSKU(t, newSKU("Case", 1500, 3))

	before := e.snapshot(t)
	var got previewAnswer
	e.mustDo(t, "POST", "/v1/checkout/preview", alice, map[string]any{"items": []any{line(phone.ID, 2)}}, http.StatusOK, &got)
	want := previewAnswer{
		Items:     []order.Line{{SKUID: phone.ID, Name: "Phone", Quantity: 2, UnitPrice: 49900, LineTotal: 99800}},
		ItemCount: 2, Subtotal: 99800, ShippingFee: testShippingFee, GrandTotal: 99800 + testShippingFee, Currency: "EUR",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("preview (-want +got):\n%s", diff)
	}
	// Unlike the design, a direct preview does not write the cart (nor
	// anything else).
	e.assertUnchanged(t, before)

	// Several lines, the whole stock.
	e.mustDo(t, "POST", "/v1/checkout/preview", alice, map[string]any{"items": []any{line(phone.ID, 10), line(case_.ID, 3)}}, http.StatusOK, &got)
	want = previewAnswer{
		Items: []order.Line{
			{SKUID: phone.ID, Name: "Phone", Quantity: 10, UnitPrice: 49900, LineTotal: 499000},
			{SKUID: case_.ID, Name: "Case", Quantity: 3, UnitPrice: 1500, LineTotal: 4500},
		},
		ItemCount: 13, Subtotal: 503500, ShippingFee: testShippingFee, GrandTotal: 503500 + testShippingFee, Currency: "EUR",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("preview (-want +got):\n%s", diff)
	}
	e.assertUnchanged(t, before)
}

func TestPreviewShippingFeeIsConfigured(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(_ *testEnv, c *Config, _ *Deps) { c.ShippingFee = 499 })
	sku := e.createSKU(t, newSKU("Phone", 100, 10))
	var got previewAnswer
	e.mustDo(t, "POST", "/v1/checkout/preview", e.token(t, "alice"), map[string]any{"items": []any{line(sku.ID, 1)}}, http.StatusOK, &got)
	if got.ShippingFee != 499 || got.GrandTotal != 599 {
		t.Errorf("shipping %d, grand total %d; want 499 and 599", got.ShippingFee, got.GrandTotal)
	}
}

func TestPreviewAddress(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	sku := e.createSKU(t, newSKU("Phone", 100, 10))
	body := map[string]any{"items": []any{line(sku.ID, 1)}}
	address := func() *addressView {
		t.Helper()
		var raw map[string]json.RawMessage
		e.mustDo(t, "POST", "/v1/checkout/preview", alice, body, http.StatusOK, &raw)
		v, ok := raw["address"]
		if !ok {
			t.Fatal("no address key in the preview")
		}
		var a *addressView
		if err := json.Unmarshal(v, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	if a := address(); a != nil {
		t.Errorf("no addresses: want null, got %+v", a)
	}
	older := e.createAddress(t, alice, newAddress("Old"))
	newer := e.createAddress(t, alice, newAddress("New"))
	e.createAddress(t, e.token(t, "bob"), newAddress("Bob")) // someone else's newest
	if a := address(); a == nil || a.ID != newer.ID || !a.Default {
		t.Errorf("want the newest address %s, got %+v", newer.ID, a)
	}
	e.mustDo(t, "DELETE", "/v1/addresses/"+newer.ID.String(), alice, nil, http.StatusNoContent, nil)
	if a := address(); a == nil || a.ID != older.ID {
		t.Errorf("after deleting the newest, want %s, got %+v", older.ID, a)
	}
	e.mustDo(t, "DELETE", "/v1/addresses/"+older.ID.String(), alice, nil, http.StatusNoContent, nil)
	if a := address(); a != nil {
		t.Errorf("all deleted: want null, got %+v", a)
	}
}

func TestPreviewCart(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	a := e.createSKU(t, newSKU("A", 1000, 10))
	b := e.createSKU(t, newSKU("B", 250, 10))
	c := e.createSKU(t, newSKU("C", 5, 10))
	d := e.createSKU(t, newSKU("D", 7, 10))
	e.mustDo(t, "PUT", "/v1/cart/items/"+a.ID.String(), alice, `{"quantity":2}`, http.StatusOK, nil)
	e.mustDo(t, "PUT", "/v1/cart/items/"+b.ID.String(), alice, `{"quantity":4}`, http.StatusOK, nil)
	e.setCart(t, "alice", c.ID, "0") // quantity 0, as the design's cart may hold
	// d is not in the cart at all.

	before := e.snapshot(t)
	var got previewAnswer
	e.mustDo(t, "POST", "/v1/checkout/preview", alice, map[string]any{"cart_sku_ids": []uuid.UUID{b.ID, c.ID, d.ID, a.ID}}, http.StatusOK, &got)
	want := previewAnswer{
		Items: []order.Line{
			{SKUID: b.ID, Name: "B", Quantity: 4, UnitPrice: 250, LineTotal: 1000},
			{SKUID: a.ID, Name: "A", Quantity: 2, UnitPrice: 1000, LineTotal: 2000},
		},
		ItemCount: 6, Subtotal: 3000, ShippingFee: testShippingFee, GrandTotal: 3000 + testShippingFee, Currency: "EUR",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cart preview (-want +got):\n%s", diff)
	}
	// A subset of the cart.
	e.mustDo(t, "POST", "/v1/checkout/preview", alice, map[string]any{"cart_sku_ids": []uuid.UUID{a.ID}}, http.StatusOK, &got)
	if got.ItemCount != 2 || got.Subtotal != 2000 || len(got.Items) != 1 {
		t.Errorf("subset preview: %+v", got)
	}
	e.assertUnchanged(t, before)
}

func TestPreviewPausedSKU(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	sku := e.createSKU(t, newSKU("Phone", 100, 10))
	if _, err := e.DB.Exec(`UPDATE skus SET paused = true WHERE id = $1`, sku.ID); err != nil {
		t.Fatal(err)
	}
	e.mustDo(t, "POST", "/v1/checkout/preview", e.token(t, "alice"), map[string]any{"items": []any{line(sku.ID, 1)}}, http.StatusOK, nil)
}

func TestPreviewInvalid(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	sku := e.createSKU(t, newSKU("Phone", 49900, 5))
	usd := e.createSKU(t, order.NewSKU{Name: "Dollar thing", Price: ptr(int64(100)), Currency: "USD", Stock: ptr(int64(5))})
	empty := e.createSKU(t, newSKU("Sold out", 100, 0))
	inCart := e.createSKU(t, newSKU("In cart", 100, 2))
	e.mustDo(t, "PUT", "/v1/cart/items/"+inCart.ID.String(), alice, `{"quantity":2}`, http.StatusOK, nil)
	e.setCart(t, "alice", sku.ID, "0")
	e.setCart(t, "alice", usd.ID, "3")
	fine := e.createSKU(t, newSKU("Fine", 100, 5))
	e.setCart(t, "alice", fine.ID, "1")
	plenty := e.createSKU(t, newSKU("Plenty", 1, 1_000_000))
	e.setCart(t, "alice", plenty.ID, "20000") // over order.MaxLineQty
	// A cart quantity over the stock, as when the stock fell after the PUT.
	if _, err := e.DB.Exec(`UPDATE skus SET stock = 1, units_sold = 1 WHERE id = $1`, inCart.ID); err != nil {
		t.Fatal(err)
	}
	unknown := uuid.New()
	id := sku.ID.String()
	many := make([]any, order.MaxLines+1)
	manyIDs := make([]uuid.UUID, order.MaxLines+1)
	for i := range many {
		manyIDs[i] = uuid.New()
		many[i] = line(manyIDs[i], 1)
	}

	cases := []struct {
		name string
		body any
		// field is a field the problem must name; mention, a string its body
		// must hold.
		field, mention string
	}{
		{"neither", `{}`, "items", ""},
		{"both null", `{"items":null,"cart_sku_ids":null}`, "items", ""},
		{"both", map[string]any{"items": []any{line(sku.ID, 1)}, "cart_sku_ids": []uuid.UUID{sku.ID}}, "cart_sku_ids", ""},
		{"empty items", `{"items":[]}`, "items", ""},
		{"empty cart ids", `{"cart_sku_ids":[]}`, "cart_sku_ids", ""},
		{"quantity abc", map[string]any{"items": []any{line(sku.ID, "abc")}}, "items.quantity", ""},
		{"quantity 1.5", `{"items":[{"sku_id":"` + id + `","quantity":1.5}]}`, "items.quantity", ""},
		{"quantity 1e2", `{"items":[{"sku_id":"` + id + `","quantity":1e2}]}`, "items.quantity", ""},
		{"quantity 0", map[string]any{"items": []any{line(sku.ID, 0)}}, "items[0].quantity", ""},
		{"quantity -1", map[string]any{"items": []any{line(sku.ID, -1)}}, "items[0].quantity", ""},
		{"quantity absent", `{"items":[{"sku_id":"` + id + `"}]}`, "items[0].quantity", ""},
		{"quantity null", `{"items":[{"sku_id":"` + id + `","quantity":null}]}`, "items[0].quantity", ""},
		{"quantity string number", `{"items":[{"sku_id":"` + id + `","quantity":"2"}]}`, "items.quantity", ""},
		{"quantity huge", `{"items":[{"sku_id":"` + id + `","quantity":9223372036854775807}]}`, "items[0].quantity", ""},
		{"quantity overflow", `{"items":[{"sku_id":"` + id + `","quantity":99999999999999999999}]}`, "items.quantity", ""},
		{"over stock", map[string]any{"items": []any{line(sku.ID, 6)}}, "items[0].quantity", id},
		{"sold out", map[string]any{"items": []any{line(empty.ID, 1)}}, "items[0].quantity", empty.ID.String()},
		{"unknown SKU", map[string]any{"items": []any{line(unknown, 1)}}, "items[0]", unknown.String()},
		{"unknown among known", map[string]any{"items": []any{line(sku.ID, 1), line(unknown, 1)}}, "items[1]", unknown.String()},
		{"sku_id absent", `{"items":[{"quantity":1}]}`, "items[0].sku_id", ""},
		{"sku_id not a uuid", `{"items":[{"sku_id":"abc","quantity":1}]}`, "body", ""},
		{"sku_id a number", `{"items":[{"sku_id":5,"quantity":1}]}`, "items.sku_id", ""},
		{"same SKU twice", map[string]any{"items": []any{line(sku.ID, 1), line(sku.ID, 1)}}, "items[1].sku_id", ""},
		{"too many lines", map[string]any{"items": many}, "items", ""},
		{"two currencies", map[string]any{"items": []any{line(sku.ID, 1), line(usd.ID, 1)}}, "items[1]", "USD"},
		{"items an object", `{"items":{"sku_id":"` + id + `","quantity":1}}`, "items", ""},
		{"items a string", `{"items":"` + id + `"}`, "items", ""},
		{"cart: unknown SKU", map[string]any{"cart_sku_ids": []uuid.UUID{inCart.ID, unknown}}, "cart_sku_ids[1]", unknown.String()},
		{"cart: nothing in the cart", map[string]any{"cart_sku_ids": []uuid.UUID{sku.ID, empty.ID}}, "cart_sku_ids", ""},
		{"cart: over stock", map[string]any{"cart_sku_ids": []uuid.UUID{sku.ID, inCart.ID}}, "cart_sku_ids[1].quantity", inCart.ID.String()},
		{"cart: two currencies", map[string]any{"cart_sku_ids": []uuid.UUID{usd.ID, fine.ID}}, "cart_sku_ids[1]", "one currency"},
		{"cart: over the line maximum", map[string]any{"cart_sku_ids": []uuid.UUID{plenty.ID}}, "cart_sku_ids[0]", ""},
		{"cart: duplicate id", map[string]any{"cart_sku_ids": []uuid.UUID{usd.ID, usd.ID}}, "cart_sku_ids[1]", ""},
		{"cart: nil id", map[string]any{"cart_sku_ids": []uuid.UUID{uuid.Nil}}, "cart_sku_ids[0]", ""},
		{"cart: not a uuid", `{"cart_sku_ids":["abc"]}`, "body", ""},
		{"cart: too many", map[string]any{"cart_sku_ids": manyIDs}, "cart_sku_ids", ""},
		{"cart: ids as objects", `{"cart_sku_ids":[{"sku_id":"` + id + `"}]}`, "cart_sku_ids", ""},
	}
	before := e.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(t, "POST", "/v1/checkout/preview", alice, c.body)
			p := wantProblem(t, resp, body, http.StatusUnprocessableEntity)
			if c.field != "" && !p.hasField(c.field) {
				t.Errorf("problem does not name %s: %s", c.field, body)
			}
			if c.mention != "" && !strings.Contains(string(body), c.mention) {
				t.Errorf("problem does not mention %s: %s", c.mention, body)
			}
		})
	}
	e.assertUnchanged(t, before)
}

// TestPreviewBigOrder prices the largest order the limits allow without
// overflowing: MaxLines lines of MaxLineQty units at MaxPrice.
func TestPreviewBigOrder(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	var items []any
	for i := range order.MaxLines {
		s := e.createSKU(t, newSKU(fmt.Sprintf("Gold %d", i), order.MaxPrice, order.MaxLineQty))
		items = append(items, line(s.ID, order.MaxLineQty))
	}
	var got previewAnswer
	e.mustDo(t, "POST", "/v1/checkout/preview", e.token(t, "alice"), map[string]any{"items": items}, http.StatusOK, &got)
	sub := int64(order.MaxLines) * order.MaxLineQty * order.MaxPrice
	if got.Subtotal != sub || got.GrandTotal != sub+testShippingFee || got.ItemCount != order.MaxLines*order.MaxLineQty {
		t.Errorf("subtotal %d, grand total %d, count %d; want %d", got.Subtotal, got.GrandTotal, got.ItemCount, sub)
	}
}
