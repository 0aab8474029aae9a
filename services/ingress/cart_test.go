package ingress

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// getCart reads the token's cart through the API.
func (e *testEnv) getCart(t testing.TB, token string) []cartItem {
	t.Helper()
	var c cartView
	e.mustDo(t, "GET", "/v1/cart", token, nil, http.StatusOK, &c)
	if c.Items == nil {
		t.Fatal("cart items is null, want an array")
	}
	return c.Items
}

func TestCart(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	var skus []uuid.UUID
	for i := range 4 {
		skus = append(skus, e.createSKU(t, newSKU(fmt.Sprintf("SKU %d", i), 100, 10)).ID)
	}
	sorted := slices.Clone(skus)
	slices.SortFunc(sorted, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	item := func(id uuid.UUID) string { return "/v1/cart/items/" + id.String() }

	if got := e.getCart(t, alice); len(got) != 0 {
		t.Fatalf("new cart: %+v", got)
	}
	// Put in reverse sort order: the answer is sorted by SKU id anyway.
	for i := len(sorted) - 1; i >= 0; i-- {
		var c cartView
		e.mustDo(t, "PUT", item(sorted[i]), alice, map[string]int{"quantity": i + 1}, http.StatusOK, &c)
		if len(c.Items) != len(sorted)-i {
			t.Errorf("PUT answers %d items, want %d", len(c.Items), len(sorted)-i)
		}
	}
	want := []cartItem{{sorted[0], 1}, {sorted[1], 2}, {sorted[2], 3}, {sorted[3], 4}}
	if diff := cmp.Diff(want, e.getCart(t, alice)); diff != "" {
		t.Errorf("cart (-want +got):\n%s", diff)
	}

	// Setting again replaces the quantity.
	e.mustDo(t, "PUT", item(sorted[1]), alice, map[string]int{"quantity": 7}, http.StatusOK, nil)
	want[1].Quantity = 7
	if diff := cmp.Diff(want, e.getCart(t, alice)); diff != "" {
		t.Errorf("after update (-want +got):\n%s", diff)
	}

	e.mustDo(t, "DELETE", item(sorted[2]), alice, nil, http.StatusNoContent, nil)
	e.mustDo(t, "DELETE", item(sorted[2]), alice, nil, http.StatusNoContent, nil) // absent: still 204
	e.mustDo(t, "DELETE", item(uuid.New()), alice, nil, http.StatusNoContent, nil)
	want = slices.Delete(want, 2, 3)
	if diff := cmp.Diff(want, e.getCart(t, alice)); diff != "" {
		t.Errorf("after delete (-want +got):\n%s", diff)
	}

	e.mustDo(t, "DELETE", "/v1/cart", alice, nil, http.StatusNoContent, nil)
	e.mustDo(t, "DELETE", "/v1/cart", alice, nil, http.StatusNoContent, nil)
	if got := e.getCart(t, alice); len(got) != 0 {
		t.Errorf("cleared cart: %+v", got)
	}
}

func TestCartQuantityLimits(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	limited := e.createSKU(t, order.NewSKU{Name: "Limited", Price: ptr(int64(100)), Currency: "EUR", Stock: ptr(int64(5)), PerUserLimit: ptr(int64(2))})
	open := e.createSKU(t, newSKU("Open", 100, 1)) // the cart limit is not the stock
	cases := []struct {
		sku  *order.SKU
		body string
		want int
	}{
		{limited, `{"quantity":1}`, 200},
		{limited, `{"quantity":2}`, 200},
		{limited, `{"quantity":3}`, 422},
		{open, `{"quantity":10000}`, 200},
		{open, `{"quantity":10001}`, 422},
		{open, `{"quantity":0}`, 422},
		{open, `{"quantity":-1}`, 422},
		{open, `{"quantity":-9223372036854775808}`, 422},
		{open, `{"quantity":9223372036854775807}`, 422},
		{open, `{"quantity":1.5}`, 422},
		{open, `{"quantity":"2"}`, 422},
		{open, `{"quantity":"abc"}`, 422},
		{open, `{"quantity":true}`, 422},
		{open, `{"quantity":null}`, 422},
		{open, `{}`, 422},
	}
	for _, c := range cases {
		t.Run(c.sku.Name+" "+c.body, func(t *testing.T) {
			before := e.snapshot(t)
			resp, body := e.do(t, "PUT", "/v1/cart/items/"+c.sku.ID.String(), alice, c.body)
			if c.want == 200 {
				if resp.StatusCode != 200 {
					t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
				}
				return
			}
			p := wantProblem(t, resp, body, c.want)
			if !p.hasField("quantity") {
				t.Errorf("problem does not name quantity: %+v", p)
			}
			e.assertUnchanged(t, before)
		})
	}
	want := []cartItem{{limited.ID, 2}, {open.ID, 10000}}
	slices.SortFunc(want, func(a, b cartItem) int { return strings.Compare(a.SKUID.String(), b.SKUID.String()) })
	if diff := cmp.Diff(want, e.getCart(t, alice)); diff != "" {
		t.Errorf("cart (-want +got):\n%s", diff)
	}
}

func TestCartUnknownSKU(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	before := e.snapshot(t)
	id := uuid.New()
	resp, body := e.do(t, "PUT", "/v1/cart/items/"+id.String(), alice, `{"quantity":1}`)
	p := wantProblem(t, resp, body, http.StatusUnprocessableEntity)
	if !p.hasField("sku_id") || !strings.Contains(string(body), id.String()) {
		t.Errorf("problem does not name the SKU: %s", body)
	}
	for _, bad := range []string{"abc", "123", "00000000-0000-0000-0000-000000000000x"} {
		for _, method := range []string{"PUT", "DELETE"} {
			resp, body := e.do(t, method, "/v1/cart/items/"+bad, alice, `{"quantity":1}`)
			wantProblem(t, resp, body, http.StatusNotFound)
		}
	}
	e.assertUnchanged(t, before)
}

// TestCartsOfOtherUsers shows that each user reads and changes only their
// own cart: the routes name no user, so another's cart cannot be reached.
func TestCartsOfOtherUsers(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice, bob := e.token(t, "alice"), e.token(t, "bob")
	a, b := e.createSKU(t, newSKU("A", 100, 10)), e.createSKU(t, newSKU("B", 100, 10))
	e.mustDo(t, "PUT", "/v1/cart/items/"+a.ID.String(), alice, `{"quantity":3}`, http.StatusOK, nil)
	e.mustDo(t, "PUT", "/v1/cart/items/"+b.ID.String(), bob, `{"quantity":1}`, http.StatusOK, nil)

	if diff := cmp.Diff([]cartItem{{b.ID, 1}}, e.getCart(t, bob)); diff != "" {
		t.Errorf("bob's cart (-want +got):\n%s", diff)
	}
	aliceCart := []cartItem{{a.ID, 3}}
	e.mustDo(t, "DELETE", "/v1/cart/items/"+a.ID.String(), bob, nil, http.StatusNoContent, nil)
	e.mustDo(t, "DELETE", "/v1/cart", bob, nil, http.StatusNoContent, nil)
	if diff := cmp.Diff(aliceCart, e.getCart(t, alice)); diff != "" {
		t.Errorf("bob changed alice's cart (-want +got):\n%s", diff)
	}
	// Bob previewing alice's cart SKUs sees nothing of hers.
	resp, body := e.do(t, "POST", "/v1/checkout/preview", bob, map[string]any{"cart_sku_ids": []uuid.UUID{a.ID}})
	wantProblem(t, resp, body, http.StatusUnprocessableEntity)
	// User ids that look like key syntax stay in their own hash.
	for _, user := range []string{"alice*", "*", "alice:x", "../alice", "alice "} {
		if got := e.getCart(t, e.token(t, user)); len(got) != 0 {
			t.Errorf("user %q sees %+v", user, got)
		}
	}
}
