package ingress

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// listAll pages through GET /v1/orders with limit and returns the ids in
// the order served, checking every page's size.
func (e *orderEnv) listAll(t *testing.T, b buyer, limit int) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("too many pages")
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page orderPage
		e.mustDo(t, "GET", "/v1/orders?"+q.Encode(), b.Token, nil, http.StatusOK, &page)
		if len(page.Items) > limit {
			t.Fatalf("page of %d, limit %d", len(page.Items), limit)
		}
		for _, o := range page.Items {
			if o.UserID != b.ID {
				t.Fatalf("listed %s's order", o.UserID)
			}
			ids = append(ids, o.ID)
		}
		if page.NextCursor == nil {
			return ids
		}
		cursor = *page.NextCursor
	}
}

func TestListOrders(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b, other := e.newBuyer(t), e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	now := time.Now()

	// Decided orders in PostgreSQL, interleaved in time with pending ones
	// only Redis knows (accepted "now" by the ingress).
	var want []uuid.UUID // oldest first
	for i := range 4 {
		want = append(want, e.insertOrder(t, b, sku, order.StatusConfirmed, now.Add(time.Duration(i-10)*time.Minute), "", "").ID)
	}
	e.insertOrder(t, other, sku, order.StatusConfirmed, now.Add(-time.Minute), "", "")
	for range 3 {
		want = append(want, e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID)
	}
	// A pending order that a partition has also written (a multi-partition
	// order, pending in both): listed once.
	both := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	want = append(want, both.OrderID)
	o := e.getOrder(t, b, both.OrderID, http.StatusOK)
	if _, err := e.DB.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, home_partition, accepted_at)
		VALUES ($1, $2, $3, $4, 'card', 'pending', 0, $5)`, o.ID, o.Number, b.ID, b.Address, o.AcceptedAt); err != nil {
		t.Fatal(err)
	}
	// A pending order that has since been decided is listed from
	// PostgreSQL, once.
	decided := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	want = append(want, decided.OrderID)
	e.decide(t, decided.OrderID, order.StatusConfirmed)
	d := e.getOrder(t, b, decided.OrderID, http.StatusOK)
	if _, err := e.DB.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, home_partition, accepted_at)
		VALUES ($1, $2, $3, $4, 'card', 'confirmed', 0, $5)`, d.ID, d.Number, b.ID, b.Address, d.AcceptedAt); err != nil {
		t.Fatal(err)
	}

	newestFirst := make([]uuid.UUID, len(want))
	for i, id := range want {
		newestFirst[len(want)-1-i] = id
	}
	for _, limit := range []int{1, 2, 3, 4, 20, 100} {
		if diff := cmp.Diff(newestFirst, e.listAll(t, b, limit)); diff != "" {
			t.Errorf("limit %d (-want +got):\n%s", limit, diff)
		}
	}
	var page orderPage
	e.mustDo(t, "GET", "/v1/orders", b.Token, nil, http.StatusOK, &page)
	if len(page.Items) != len(want) || page.NextCursor != nil {
		t.Errorf("default page: %d items, next %v", len(page.Items), page.NextCursor)
	}
	if page.Items[len(page.Items)-1].Lines == nil || page.Items[len(page.Items)-1].Lines[0].Name != "Sneaker" {
		t.Errorf("oldest order %+v: want its lines", page.Items[len(page.Items)-1])
	}
	if ids := e.listAll(t, other, 10); len(ids) != 1 {
		t.Errorf("other user sees %d orders, want 1", len(ids))
	}
	if ids := e.listAll(t, e.newBuyer(t), 10); len(ids) != 0 {
		t.Errorf("new user sees %d orders", len(ids))
	}
}

func TestListOrdersBadQuery(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	// Another user's cursor is just a position: harmless, but a forged one
	// must not be a 500.
	for _, c := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=101", "limit"}, {"limit=x", "limit"}, {"limit=-1", "limit"},
		{"cursor=nope", "cursor"}, {"cursor=" + order.OrderCursor{}.String() + "x", "cursor"},
		{"cursor=" + url.QueryEscape("MTIz"), "cursor"}, {"cursor=%00", "cursor"},
	} {
		resp, data := e.do(t, "GET", "/v1/orders?"+c.query, b.Token, nil)
		if p := wantProblem(t, resp, data, http.StatusUnprocessableEntity); !p.hasField(c.field) {
			t.Errorf("%s: problem %s does not name %s", c.query, data, c.field)
		}
	}
	resp, data := e.do(t, "GET", "/v1/orders", "", nil)
	wantProblem(t, resp, data, http.StatusUnauthorized)
}
