package worker

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// waitMarker waits until sku's sold-out marker is as wanted: at the SKU's
// committed version when marked, absent otherwise.
func (e *env) waitMarker(sku uuid.UUID, marked bool, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	row := func() (version, stock int64) {
		if err := e.db.QueryRow(`SELECT version, stock FROM skus WHERE id = $1`, sku).Scan(&version, &stock); err != nil {
			e.t.Fatal(err)
		}
		return version, stock
	}
	for {
		before, _ := row()
		v, ok, err := e.rs.SoldOutVersion(context.Background(), sku)
		if err != nil {
			e.t.Fatal(err)
		}
		version, stock := row()
		// The row did not change around the read of the marker: what the
		// marker says must hold of it.
		if ok && stock != 0 && before == version {
			e.t.Fatalf("SKU %s is marked sold out at version %d while its stock is %d", sku, v, stock)
		}
		if ok == marked && (!ok || v == version) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: marker of %s %d, %v; want marked %v at version %d", timeout, sku, v, ok, marked, version)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSoldOutMarkerFollowsThePartition: the worker marks a SKU sold out
// when its batch sells the last unit, and a restock or a cancel removes the
// marker; a marker never stands while stock remains.
func TestSoldOutMarkerFollowsThePartition(t *testing.T) {
	e := newEnv(t, 2)
	e.start(e.worker("w1"))
	sku := e.sku(1, 3, 0)
	var cmds []order.Command
	for i := range 4 {
		cmds = append(cmds, e.checkout("buyer-"+string(rune('a'+i)), sku, 1))
	}
	e.publish(4, cmds...)
	e.waitFinal(orderIDs(cmds), 20*time.Second)
	e.waitMarker(sku, true, 5*time.Second)

	e.publish(1, order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 1, At: time.Now(), Restock: &order.Restock{SKUID: sku, Quantity: 1}})
	e.waitMarker(sku, false, 10*time.Second)
	if got := e.stock(sku); got.Stock != 1 {
		t.Fatalf("stock after restock %+v", got)
	}

	c := e.checkout("buyer-z", sku, 1)
	e.publish(1, c)
	e.waitStatus(c.Checkout.OrderID, order.StatusConfirmed, 10*time.Second)
	e.waitMarker(sku, true, 5*time.Second)

	e.publish(1, e.cancel(c))
	e.waitStatus(c.Checkout.OrderID, order.StatusCancelled, 10*time.Second)
	e.waitMarker(sku, false, 5*time.Second)
}

// TestIngressRejectionsRecorded: a record of a rejection decided at the
// ingress, published through the ingress's batching publisher, becomes a
// rejected order in PostgreSQL and in the status cache with exactly one
// order.rejected event, also when the order's checkout comes later.
func TestIngressRejectionsRecorded(t *testing.T) {
	e := newEnv(t, 2)
	e.start(e.worker("w1"))
	sku := e.sku(0, 0, 0)
	pub := natsbus.NewBatchPublisher(e.js, natsbus.BatchConfig{Partitions: 2})
	t.Cleanup(pub.Close)

	var checkouts []order.Command
	for i := range 3 {
		c := e.checkout("buyer-"+string(rune('a'+i)), sku, 1)
		checkouts = append(checkouts, c)
		rec := order.Command{
			ID: order.RejectionCommandID(c.Checkout.OrderID), Kind: order.KindRecordRejection, Partition: c.Partition, At: c.At,
			Rejection: &order.Rejection{Checkout: *c.Checkout, Reason: order.RejectOutOfStock, SKUs: []uuid.UUID{sku}, DecidedAt: time.Now()},
		}
		if err := pub.Publish(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	ids := orderIDs(checkouts)
	e.waitFinal(ids, 20*time.Second)
	// The checkout of the first order reaches its partition too (a retry
	// with the same Idempotency-Key republished it): skipped.
	e.publish(1, checkouts[0])
	time.Sleep(300 * time.Millisecond)
	e.waitFinal(ids, 20*time.Second)

	for _, id := range ids {
		if st, reason := e.status(id); st != order.StatusRejected || reason != order.RejectOutOfStock {
			t.Errorf("order %s is %s %s", id, st, reason)
		}
		o, err := e.rs.OrderStatus(context.Background(), id)
		if err != nil || o.Status != order.StatusRejected {
			t.Errorf("cached order %s: %+v, %v", id, o, err)
		}
	}
	evs := e.events()
	validateEvents(t, evs)
	got := decisions(t, evs)
	for _, id := range ids {
		if got[id.String()] != 1 {
			t.Errorf("order %s has %d decision events, want 1", id, got[id.String()])
		}
	}
	// The records mark themselves processed (so that an ingress that
	// abandoned one meets them there); nothing else was applied.
	if n := e.count(`SELECT count(*) FROM processed_commands WHERE kind <> $1`, order.KindRecordRejection); n != 0 {
		t.Errorf("%d commands applied by a partition", n)
	}
	if n := e.count(`SELECT count(*) FROM processed_commands WHERE kind = $1`, order.KindRecordRejection); n != len(ids) {
		t.Errorf("%d records marked processed, want %d", n, len(ids))
	}
}
