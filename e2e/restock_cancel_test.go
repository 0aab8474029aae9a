package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// TestRestockAndCancelThroughHTTP: an admin restock adds its quantity to
// the stock (through the SKU's partition); a confirmed order cancelled by
// its buyer becomes cancelled and gives its units back; cancelling it again
// is 409; another user's cancel is 404 and changes nothing.
func TestRestockAndCancelThroughHTTP(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	st.startWorker(t, "worker-1")
	ctx := context.Background()

	sku := api.createSKU(t, "desk lamp", 5)
	path := "/v1/skus/" + sku.ID.String()
	bs := api.newBuyers(t, 2)
	owner, stranger := bs[0], bs[1]

	// Restock: admin only, then the stock grows by the quantity.
	api.mustCall(t, "POST", path+"/restock", owner.Token, map[string]int64{"quantity": 7}, http.StatusForbidden, nil)
	var queued struct {
		CommandID uuid.UUID `json:"command_id"`
		SKUID     uuid.UUID `json:"sku_id"`
		Quantity  int64     `json:"quantity"`
	}
	api.mustCall(t, "POST", path+"/restock", mint(t, "admin", true), map[string]int64{"quantity": 7}, http.StatusAccepted, &queued)
	if queued.SKUID != sku.ID || queued.Quantity != 7 || queued.CommandID == uuid.Nil {
		t.Errorf("restock answered %+v, want the SKU, quantity 7 and a command id", queued)
	}
	wantSKU(t, api, sku.ID, 12, 0, 7)

	// A confirmed order of 3 units.
	acc, _, err := api.checkout(ctx, owner, directBody(owner, sku.ID, 3), "lamp-order")
	if err != nil {
		t.Fatal(err)
	}
	o, err := api.awaitDecision(ctx, owner, acc.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusConfirmed || o.GrandTotal != 3*sku.Price+shippingFee {
		t.Fatalf("order %s is %s with grand total %d, want confirmed with %d", o.ID, o.Status, o.GrandTotal, 3*sku.Price+shippingFee)
	}
	wantSKU(t, api, sku.ID, 9, 3, 7)
	// The long-poll can answer before the status cache has the decision
	// (TestStatusNeverGoesBack); the steps below read the cache.
	awaitRead(t, api, owner, acc.OrderID, order.StatusConfirmed)

	// Another user's cancel: 404, as if the order did not exist.
	cancel := "/v1/orders/" + acc.OrderID.String() + "/cancel"
	api.mustCall(t, "POST", cancel, stranger.Token, nil, http.StatusNotFound, nil)
	api.mustCall(t, "GET", "/v1/orders/"+acc.OrderID.String(), stranger.Token, nil, http.StatusNotFound, nil)
	if o, err := api.order(ctx, owner, acc.OrderID, 0); err != nil || o.Status != order.StatusConfirmed {
		t.Fatalf("after another user's cancel the order is %+v (%v), want confirmed", o, err)
	}

	// The owner's cancel: the order becomes cancelled, its units go back.
	api.mustCall(t, "POST", cancel, owner.Token, nil, http.StatusAccepted, nil)
	waitCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	o, err = api.awaitStatusChange(waitCtx, owner, acc.OrderID, order.StatusConfirmed)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusCancelled {
		t.Fatalf("cancelled order is %s, want cancelled", o.Status)
	}
	wantSKU(t, api, sku.ID, 12, 0, 7)
	awaitRead(t, api, owner, acc.OrderID, order.StatusCancelled)

	// Cancelling again: 409; the stranger still gets 404.
	resp, err := api.do(ctx, "POST", cancel, owner.Token, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusConflict || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("second cancel = %s (%s), want a 409 problem", resp, resp.Header.Get("Content-Type"))
	}
	api.mustCall(t, "POST", cancel, stranger.Token, nil, http.StatusNotFound, nil)

	// PostgreSQL agrees, and nothing moved twice.
	var status order.Status
	if err := st.DB.Get(&status, `SELECT status FROM orders WHERE id = $1`, acc.OrderID); err != nil || status != order.StatusCancelled {
		t.Errorf("PostgreSQL: order is %q (%v), want cancelled", status, err)
	}
	var stock, restocked, sold int64
	if err := st.DB.QueryRow(`SELECT stock, restocked, units_sold FROM skus WHERE id = $1`, sku.ID).Scan(&stock, &restocked, &sold); err != nil {
		t.Fatal(err)
	}
	if stock != 12 || restocked != 7 || sold != 0 {
		t.Errorf("PostgreSQL: stock %d, restocked %d, units_sold %d; want 12, 7, 0", stock, restocked, sold)
	}

	// Downstream: one decision (confirmed) and one order.cancelled event.
	want := map[uuid.UUID]order.Status{acc.OrderID: order.StatusConfirmed}
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, want, 30*time.Second), want)
	err = eventually(10*time.Second, func() error {
		evs, err := readEvents(ctx, st.JS, order.EventCancelled)
		if err != nil {
			return err
		}
		ids := map[uuid.UUID]bool{}
		for _, ev := range evs {
			if err := ev.check(); err != nil {
				return err
			}
			if ev.Subject != acc.OrderID.String() {
				return fmt.Errorf("order.cancelled event for order %s, want only %s", ev.Subject, acc.OrderID)
			}
			ids[ev.ID] = true
		}
		if len(ids) != 1 {
			return fmt.Errorf("%d distinct order.cancelled events, want 1", len(ids))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// wantSKU waits up to 10s until the SKU shows stock, units_sold and
// restocked as given (stock changes are applied by its partition, after
// the 202), and fails the test if it does not.
func wantSKU(t *testing.T, api *api, id uuid.UUID, stock, sold, restocked int64) {
	t.Helper()
	var got order.SKU
	err := eventually(10*time.Second, func() error {
		got = api.sku(t, id)
		if got.Stock != stock || got.UnitsSold != sold || got.Restocked != restocked {
			return fmt.Errorf("SKU: stock %d, units_sold %d, restocked %d; want %d, %d, %d", got.Stock, got.UnitsSold, got.Restocked, stock, sold, restocked)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCancelPendingOrderThroughHTTP: a buyer cancels an order before any
// worker has seen it (SPEC: "cancel a pending or unpaid order"). When the
// worker starts, the order ends cancelled, whatever it went through, and
// holds nothing: the SKU's stock is whole again.
func TestCancelPendingOrderThroughHTTP(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	ctx := context.Background()

	sku := api.createSKU(t, "umbrella", 3)
	b := api.newBuyers(t, 1)[0]
	acc, _, err := api.checkout(ctx, b, directBody(b, sku.ID, 2), "umbrella")
	if err != nil {
		t.Fatal(err)
	}
	var o order.Order
	api.mustCall(t, "POST", "/v1/orders/"+acc.OrderID.String()+"/cancel", b.Token, nil, http.StatusAccepted, &o)
	if o.Status != order.StatusPending {
		t.Errorf("cancel of an order no worker has seen answered %s, want it as it is: pending", o.Status)
	}

	st.startWorker(t, "worker-1")
	// Plain reads, not a long-poll: the confirmation may show in between,
	// and a read right after a long-poll may lag it (TestStatusNeverGoesBack).
	awaitRead(t, api, b, acc.OrderID, order.StatusCancelled)
	wantSKU(t, api, sku.ID, 3, 0, 0)
	st.awaitCommandsApplied(t, 10*time.Second)
	var status order.Status
	if err := st.DB.Get(&status, `SELECT status FROM orders WHERE id = $1`, acc.OrderID); err != nil || status != order.StatusCancelled {
		t.Errorf("PostgreSQL: order is %q (%v), want cancelled", status, err)
	}
	err = eventually(10*time.Second, func() error {
		evs, err := readEvents(ctx, st.JS, order.EventCancelled)
		if err != nil {
			return err
		}
		if len(evs) != 1 || evs[0].Subject != acc.OrderID.String() {
			return fmt.Errorf("%d order.cancelled events, want one for order %s", len(evs), acc.OrderID)
		}
		return evs[0].check()
	})
	if err != nil {
		t.Error(err)
	}
	d, err := readDecisions(ctx, st.JS)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range d.ByOrder[acc.OrderID] {
		types = append(types, ev.Type)
	}
	if len(types) > 1 {
		t.Errorf("decision events of the cancelled order: %q, want at most one", types)
	}
	t.Logf("decision events of the order cancelled while pending: %q", types)
}

// awaitRead waits up to 30s until a plain read of the order (the status
// cache, then PostgreSQL) answers want, and fails the test if it does not.
func awaitRead(t *testing.T, api *api, b buyer, id uuid.UUID, want order.Status) {
	t.Helper()
	err := eventually(30*time.Second, func() error {
		o, err := api.order(context.Background(), b, id, 0)
		if err == nil && o.Status != want {
			err = fmt.Errorf("order %s is %s (%s), want %s", id, o.Status, o.RejectReason, want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
