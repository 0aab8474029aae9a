package worker

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// holdSKU inserts a SKU of partition p with stock units whose orders hold
// it for holdSecs seconds.
func (e *env) holdSKU(p int, stock int64, holdSecs int) uuid.UUID {
	e.t.Helper()
	id := e.sku(p, stock, 0)
	if _, err := e.db.Exec(`UPDATE skus SET payment_hold_seconds = $2 WHERE id = $1`, id, holdSecs); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// eventsOf counts the events of each type of order id.
func eventsOf(evs []event, id uuid.UUID) map[order.EventType]int {
	out := map[order.EventType]int{}
	for _, ev := range evs {
		if ev.Subject == id.String() {
			out[ev.Type]++
		}
	}
	return out
}

// waitEvents waits until the events stream holds n events of type typ for
// order id.
func (e *env) waitEvents(id uuid.UUID, typ order.EventType, n int, timeout time.Duration) []event {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := e.events()
		if eventsOf(evs, id)[typ] >= n {
			return evs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("order %s: events %v after %v, want %d %s", id, eventsOf(evs, id), timeout, n, typ)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.holdSKU(1, 10, 1)
	expires := e.checkout("u1", sku, 2)
	paid := e.checkout("u2", sku, 3)
	e.start(e.worker("w1"))
	e.publish(1, expires, paid)
	e.waitStatus(expires.Checkout.OrderID, order.StatusConfirmed, 10*time.Second)
	e.waitStatus(paid.Checkout.OrderID, order.StatusConfirmed, 10*time.Second)

	// Paid before its hold ends: never expires.
	if _, ok, err := e.db.PayOrder(context.Background(), &order.Payment{OrderID: paid.Checkout.OrderID, Amount: 4000, Currency: "EUR", ProviderRef: "pi_paid"}); err != nil || !ok {
		t.Fatalf("pay: %v %v", ok, err)
	}

	e.waitStatus(expires.Checkout.OrderID, order.StatusExpired, 10*time.Second)
	if got := e.stock(sku); got != (stock{7, 3}) {
		t.Errorf("stock %+v, want the expired order's units back and the paid ones held", got)
	}
	e.waitEvents(expires.Checkout.OrderID, order.EventExpired, 1, 10*time.Second)
	time.Sleep(1500 * time.Millisecond) // another sweep or two
	evs := e.events()
	validateEvents(t, evs)
	if got := eventsOf(evs, expires.Checkout.OrderID); got[order.EventExpired] != 1 || got[order.EventConfirmed] != 1 {
		t.Errorf("expired order's events %v, want one confirmed and one expired", got)
	}
	if got := eventsOf(evs, paid.Checkout.OrderID); got[order.EventExpired] != 0 {
		t.Errorf("paid order's events %v, want no expired", got)
	}
	if st, _ := e.status(paid.Checkout.OrderID); st != order.StatusPaid {
		t.Errorf("paid order is %s", st)
	}
	cached, err := e.rs.OrderStatus(context.Background(), expires.Checkout.OrderID)
	if err != nil || cached.Status != order.StatusExpired {
		t.Errorf("status cache: %+v %v, want expired", cached, err)
	}
}

// TestExpiryAcrossRestart stops the worker while an order holds its stock
// and starts a new one after the hold ended: the order expires exactly
// once, without any further command on its partition.
func TestExpiryAcrossRestart(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.holdSKU(0, 5, 2)
	c := e.checkout("u1", sku, 1)
	stop := e.start(e.worker("w1"))
	e.publish(1, c)
	e.waitStatus(c.Checkout.OrderID, order.StatusConfirmed, 10*time.Second)
	stop()
	time.Sleep(2100 * time.Millisecond)
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
		t.Fatalf("with no worker the order became %s", st)
	}
	e.start(e.worker("w2"))
	e.start(e.worker("w3"))
	e.waitStatus(c.Checkout.OrderID, order.StatusExpired, 10*time.Second)
	e.waitEvents(c.Checkout.OrderID, order.EventExpired, 1, 10*time.Second)
	time.Sleep(1500 * time.Millisecond)
	if got := eventsOf(e.events(), c.Checkout.OrderID); got[order.EventExpired] != 1 {
		t.Errorf("events %v, want one expired", got)
	}
	if got := e.stock(sku); got != (stock{5, 0}) {
		t.Errorf("stock %+v, want all back", got)
	}
}
