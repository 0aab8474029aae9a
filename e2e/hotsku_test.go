package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// TestHotSKUThroughHTTP is the flash sale of SPEC 5.5 through HTTP: 1,000
// buyers of one unit each rush one SKU with stock 100. Every checkout is
// accepted, exactly 100 are confirmed and 900 rejected out_of_stock naming
// the SKU, the SKU ends at stock 0 with 100 units sold, PostgreSQL holds one
// order per buyer and ORDER_EVENTS one decision event per order.
func TestHotSKUThroughHTTP(t *testing.T) {
	t.Parallel()
	const stock, buyers = 100, 1000
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	st.startWorker(t, "worker-1")

	sku := api.createSKU(t, "hot sneaker", stock)
	bs := api.newBuyers(t, buyers)

	start := time.Now()
	accs := checkoutAll(t, api, bs, func(b buyer) map[string]any { return directBody(b, sku.ID, 1) })
	t.Logf("%d checkouts accepted in %s", buyers, time.Since(start).Round(time.Millisecond))

	decided := awaitAll(t, api, bs, accs, 60*time.Second)
	t.Logf("%d orders decided %s after the first checkout", buyers, time.Since(start).Round(time.Millisecond))
	checkHotSKUDecisions(t, decided, sku, stock)

	if got := api.sku(t, sku.ID); got.Stock != 0 || got.UnitsSold != stock {
		t.Errorf("SKU after the sale: stock %d, units_sold %d; want 0 and %d", got.Stock, got.UnitsSold, stock)
	}
	checkDatabase(t, st.DB, decided, sku.ID, stock)

	want := statuses(decided)
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, want, 30*time.Second), want)
}

// TestHotSKUCartCheckoutThroughHTTP is the flash sale from carts: 20 buyers
// hold the hot SKU (stock 10) and another SKU in their carts and check out
// the hot one by cart_sku_ids. The 10 confirmed buyers' carts lose the hot
// SKU and keep the other; the 10 rejected buyers' carts are untouched
// (SPEC 3.2: purchased SKUs leave the cart only when the order is
// confirmed).
func TestHotSKUCartCheckoutThroughHTTP(t *testing.T) {
	t.Parallel()
	const stock, buyers = 10, 20
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	st.startWorker(t, "worker-1")

	hot := api.createSKU(t, "hot hoodie", stock)
	other := api.createSKU(t, "socks", 100)
	bs := api.newBuyers(t, buyers)
	for _, b := range bs {
		api.mustCall(t, "PUT", "/v1/cart/items/"+hot.ID.String(), b.Token, map[string]int64{"quantity": 1}, http.StatusOK, nil)
		api.mustCall(t, "PUT", "/v1/cart/items/"+other.ID.String(), b.Token, map[string]int64{"quantity": 2}, http.StatusOK, nil)
	}

	accs := checkoutAll(t, api, bs, func(b buyer) map[string]any { return cartBody(b, hot.ID) })
	decided := awaitAll(t, api, bs, accs, 60*time.Second)
	checkHotSKUDecisions(t, decided, hot, stock)

	before := map[uuid.UUID]int64{hot.ID: 1, other.ID: 2}
	after := map[uuid.UUID]int64{other.ID: 2}
	for i, b := range bs {
		want := before
		if decided[i].Status == order.StatusConfirmed {
			want = after
		}
		// The worker removes the SKU in the same Redis round trip that
		// caches the decision; allow that round trip to finish.
		err := eventually(5*time.Second, func() error {
			if diff := cmp.Diff(want, api.cart(t, b)); diff != "" {
				return fmt.Errorf("cart of %s, whose order is %s (-want +got):\n%s", b.ID, decided[i].Status, diff)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	if got := api.sku(t, hot.ID); got.Stock != 0 || got.UnitsSold != stock {
		t.Errorf("SKU after the sale: stock %d, units_sold %d; want 0 and %d", got.Stock, got.UnitsSold, stock)
	}
	if got := api.sku(t, other.ID); got.Stock != 100 || got.UnitsSold != 0 {
		t.Errorf("the SKU nobody checked out: stock %d, units_sold %d; want 100 and 0", got.Stock, got.UnitsSold)
	}
	checkDatabase(t, st.DB, decided, hot.ID, stock)
	want := statuses(decided)
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, want, 30*time.Second), want)
}

// checkoutAll posts one checkout per buyer, all at once, each with an
// Idempotency-Key, and fails the test unless every one is accepted with an
// order id of its own.
func checkoutAll(t *testing.T, api *api, bs []buyer, body func(buyer) map[string]any) []accepted {
	t.Helper()
	accs := make([]accepted, len(bs))
	errs := make([]error, len(bs))
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() {
			<-gate
			accs[i], _, errs[i] = api.checkout(context.Background(), b, body(b), "checkout-"+b.ID)
		})
	}
	close(gate)
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d checkouts were not accepted", failed, len(bs))
	}
	seen := map[uuid.UUID]bool{}
	numbers := map[string]bool{}
	for _, a := range accs {
		if seen[a.OrderID] || numbers[a.OrderNumber] {
			t.Fatalf("order id %s or number %s answered twice", a.OrderID, a.OrderNumber)
		}
		seen[a.OrderID], numbers[a.OrderNumber] = true, true
	}
	return accs
}

// awaitAll long-polls every order until it is decided, each buyer on a
// goroutine of its own, and fails the test if any is still pending after
// d. It returns the decided orders in the buyers' order.
func awaitAll(t *testing.T, api *api, bs []buyer, accs []accepted, d time.Duration) []*order.Order {
	t.Helper()
	return awaitDecided(t, api, bs, accs, nil, d)
}

// awaitDecided is awaitAll for buyers who may have retried (attempts[i]
// is buyer i's number of checkout attempts; nil: one each): an order
// whose first attempt was stored but not confirmed (a 503) keeps that
// attempt's number, which the retry's 202 cannot know (SPEC 3.2 promises
// the same order id), so numbers are compared only for one-attempt buyers.
func awaitDecided(t *testing.T, api *api, bs []buyer, accs []accepted, attempts []int, d time.Duration) []*order.Order {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out := make([]*order.Order, len(bs))
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() { out[i], errs[i] = api.awaitDecision(ctx, b, accs[i].OrderID) })
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d accepted orders were not decided within %s", failed, len(bs), d)
	}
	renumbered := 0
	for i, o := range out {
		switch {
		case o.Number == accs[i].OrderNumber:
		case attempts != nil && attempts[i] > 1:
			renumbered++
		default:
			t.Errorf("order %s: number %q, but the 202 said %q", o.ID, o.Number, accs[i].OrderNumber)
		}
	}
	if renumbered > 0 {
		t.Logf("%d retried orders keep the number of an earlier attempt, not the one their 202 said", renumbered)
	}
	return out
}

// checkHotSKUDecisions fails the test unless exactly stock orders of one
// unit of sku are confirmed, priced, and every other one is rejected
// out_of_stock naming sku.
func checkHotSKUDecisions(t *testing.T, decided []*order.Order, sku order.SKU, stock int) {
	t.Helper()
	confirmed, rejected := 0, 0
	for _, o := range decided {
		switch o.Status {
		case order.StatusConfirmed:
			confirmed++
			want := []order.Line{{SKUID: sku.ID, Name: sku.Name, Quantity: 1, UnitPrice: sku.Price, LineTotal: sku.Price}}
			if diff := cmp.Diff(want, o.Lines); diff != "" || o.Currency != sku.Currency || o.GrandTotal != sku.Price+shippingFee {
				t.Errorf("confirmed order %s: currency %q, grand total %d (want %d), lines (-want +got):\n%s", o.ID, o.Currency, o.GrandTotal, sku.Price+shippingFee, diff)
			}
		case order.StatusRejected:
			rejected++
			if o.RejectReason != order.RejectOutOfStock || !slices.Equal(o.RejectSKUs, []uuid.UUID{sku.ID}) {
				t.Errorf("rejected order %s: reason %q naming %v, want out_of_stock naming %s", o.ID, o.RejectReason, o.RejectSKUs, sku.ID)
			}
		default:
			t.Errorf("order %s is %s, want confirmed or rejected", o.ID, o.Status)
		}
	}
	if confirmed != stock || rejected != len(decided)-stock {
		t.Errorf("%d confirmed, %d rejected; want %d and %d", confirmed, rejected, stock, len(decided)-stock)
	}
}

// statuses maps each order to its status.
func statuses(orders []*order.Order) map[uuid.UUID]order.Status {
	m := make(map[uuid.UUID]order.Status, len(orders))
	for _, o := range orders {
		m[o.ID] = o.Status
	}
	return m
}

// checkDatabase fails the test unless PostgreSQL holds exactly the orders
// the buyers saw, in the statuses they saw, and the confirmed ones hold
// soldUnits of sku in all.
func checkDatabase(t *testing.T, db *postgres.DB, decided []*order.Order, sku uuid.UUID, soldUnits int64) {
	t.Helper()
	var rows []struct {
		ID     uuid.UUID    `db:"id"`
		Status order.Status `db:"status"`
	}
	if err := db.Select(&rows, `SELECT id, status FROM orders`); err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]order.Status{}
	for _, r := range rows {
		got[r.ID] = r.Status
	}
	if len(rows) != len(decided) {
		t.Errorf("PostgreSQL holds %d orders, want %d: one per accepted checkout", len(rows), len(decided))
	}
	if diff := cmp.Diff(statuses(decided), got); diff != "" {
		t.Errorf("orders in PostgreSQL differ from what the buyers saw over HTTP (-http +postgres):\n%s", diff)
	}
	var held struct {
		Orders int64 `db:"orders"`
		Units  int64 `db:"units"`
	}
	err := db.Get(&held, `SELECT count(DISTINCT o.id) AS orders, COALESCE(sum(l.quantity), 0) AS units
		FROM orders o JOIN order_lines l ON l.order_id = o.id
		WHERE o.status IN ('confirmed', 'paid') AND l.sku_id = $1`, sku)
	if err != nil {
		t.Fatal(err)
	}
	if held.Units != soldUnits {
		t.Errorf("PostgreSQL: %d confirmed orders hold %d units of the SKU, want %d units", held.Orders, held.Units, soldUnits)
	}
	var stock, initial, restocked, sold int64
	if err := db.QueryRow(`SELECT stock, initial_stock, restocked, units_sold FROM skus WHERE id = $1`, sku).Scan(&stock, &initial, &restocked, &sold); err != nil {
		t.Fatal(err)
	}
	if stock < 0 || stock+held.Units != initial+restocked || sold != held.Units {
		t.Errorf("PostgreSQL: SKU stock %d + held %d != initial %d + restocked %d, or units_sold %d != held: oversold or leaked", stock, held.Units, initial, restocked, sold)
	}
}
