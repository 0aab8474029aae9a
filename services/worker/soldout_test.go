package worker

import (
	"context"
	"strconv"
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
	// The marker goes before the restock commits: wait for the commit.
	for deadline := time.Now().Add(10 * time.Second); e.stock(sku).Stock != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("stock after restock %+v", e.stock(sku))
		}
		time.Sleep(20 * time.Millisecond)
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

// TestRedisOutageHoldsOnlyTheStockComingBack: while Redis is down, a
// restock and a cancel that would bring a sold-out SKU's stock back from 0
// cannot delete its marker, so they wait; the checkouts of the same
// message (another SKU) are decided meanwhile, not held behind them. Once
// Redis is back the restock and the cancel are applied and the marker is
// gone.
func TestRedisOutageHoldsOnlyTheStockComingBack(t *testing.T) {
	e := newEnv(t, 2)
	proxy, viaProxy := e.redisThroughProxy()
	e.start(withRedis(e.worker("w1"), viaProxy))
	gone := e.sku(1, 1, 0)
	other := e.sku(1, 10, 0)
	first := e.checkout("buyer-0", gone, 1)
	e.publish(1, first)
	e.waitStatus(first.Checkout.OrderID, order.StatusConfirmed, 20*time.Second)
	e.waitMarker(gone, true, 5*time.Second)

	proxy.setDown(true)
	restock := order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 1, At: time.Now(), Restock: &order.Restock{SKUID: gone, Quantity: 2}}
	buyers := []order.Command{e.checkout("buyer-1", other, 1), e.checkout("buyer-2", other, 1)}
	e.cachePending(buyers...)
	data, err := order.EncodeEnvelope(append([]order.Command{restock, e.cancel(first)}, buyers...)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), order.Subject(1), data); err != nil {
		t.Fatal(err)
	}
	ids := orderIDs(buyers)
	deadline := time.Now().Add(15 * time.Second)
	for e.outcomes(ids)["confirmed/"] != len(ids) {
		if time.Now().After(deadline) {
			t.Fatalf("with Redis down, the checkouts of another SKU are still %v after 15s: held behind the restock and the cancel", e.outcomes(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.stock(gone); got != (stock{0, 1}) {
		t.Errorf("with Redis down the sold-out SKU is %+v: its stock came back while its marker may stand", got)
	}
	if st, _ := e.status(first.Checkout.OrderID); st != order.StatusConfirmed {
		t.Errorf("with Redis down the cancelled order is %s", st)
	}

	proxy.setDown(false)
	e.waitStatus(first.Checkout.OrderID, order.StatusCancelled, 60*time.Second)
	deadline = time.Now().Add(60 * time.Second)
	for e.stock(gone) != (stock{3, 0}) {
		if time.Now().After(deadline) {
			t.Fatalf("after Redis came back the sold-out SKU is %+v, want the restock and the cancel applied", e.stock(gone))
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.waitMarker(gone, false, 5*time.Second)
	e.waitCached(append(ids, first.Checkout.OrderID), 30*time.Second)
	waitDrained(t, e, 1)
}

// TestRedisOutageAtTheLastDelivery: a restock that waits for Redis at its
// message's last delivery is kept by the partition loop, not Nak'ed into a
// dead letter, while the partition goes on deciding checkouts; it is
// applied once Redis is back.
func TestRedisOutageAtTheLastDelivery(t *testing.T) {
	e := newEnv(t, 2)
	proxy, viaProxy := e.redisThroughProxy()
	e.start(withRedis(e.worker("w1", func(c *Config) { c.MaxDeliver = 1; c.AckWait = 2 * time.Second }), viaProxy))
	gone := e.sku(1, 0, 0)
	other := e.sku(1, 10, 0)

	proxy.setDown(true)
	e.publish(1, order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 1, At: time.Now(), Restock: &order.Restock{SKUID: gone, Quantity: 2}})
	// Longer than the ack wait: the loop keeps the message alive.
	for i := range 3 {
		buyer := e.checkout("buyer-"+strconv.Itoa(i), other, 1)
		e.publish(1, buyer)
		e.waitStatus(buyer.Checkout.OrderID, order.StatusConfirmed, 20*time.Second)
		time.Sleep(time.Second)
	}
	if got := e.stock(gone); got.Stock != 0 {
		t.Fatalf("with Redis down the sold-out SKU is %+v", got)
	}
	proxy.setDown(false)
	deadline := time.Now().Add(30 * time.Second)
	for e.stock(gone).Stock != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("30s after Redis came back the restock is not applied: %+v", e.stock(gone))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.count(`SELECT count(*) FROM dead_letters`); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	waitDrained(t, e, 1)
}
