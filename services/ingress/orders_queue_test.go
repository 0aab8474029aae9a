package ingress

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func init() {
	sseQueueEvery = 100 * time.Millisecond
}

// queuePosition polls GET /v1/orders/{id} until the order's queue position
// is want (the served counters are cached for queueRefresh), failing after
// 5 seconds.
func (e *orderEnv) awaitQueuePosition(t *testing.T, b buyer, id uuid.UUID, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o := e.getOrder(t, b, id, 200)
		if o.QueuePosition != nil && *o.QueuePosition == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s: queue position %v, want %d", id, o.QueuePosition, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQueuePosition: pending orders of one SKU are told how many commands
// are ahead of them, by GET and by their event stream, and move up as the
// partition applies checkouts; a decided order has no position.
func TestQueuePosition(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	var (
		buyers []buyer
		ids    []uuid.UUID
	)
	for range 3 {
		b := e.newBuyer(t)
		buyers = append(buyers, b)
		ids = append(ids, e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID)
	}
	for i := range ids {
		e.awaitQueuePosition(t, buyers[i], ids[i], int64(i))
	}

	resp, err := e.rawEvents(t, buyers[2], ids[2], "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := readSSE(t, resp.Body)
	first := events.next(t)
	wantEvent(t, first, ids[2], order.StatusPending)
	if p := first.Order.QueuePosition; p == nil || *p != 2 {
		t.Fatalf("pending event: queue position %v, want 2", p)
	}

	// The partition applies the first two checkouts.
	_, ticket, err := e.Redis.OrderInLine(context.Background(), ids[0])
	if err != nil || ticket.N == 0 {
		t.Fatalf("ticket of the first order: %+v, %v", ticket, err)
	}
	if err := e.Redis.ApplyPartition(context.Background(), ticket.Partition, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	ev := events.next(t)
	if ev.Event != "queue" || ev.ID != "" || ev.Order.QueuePosition == nil || *ev.Order.QueuePosition != 0 {
		t.Fatalf("got event %q id %q position %v, want a queue event with position 0 and no id", ev.Event, ev.ID, ev.Order.QueuePosition)
	}
	e.awaitQueuePosition(t, buyers[2], ids[2], 0)

	e.decide(t, ids[2], order.StatusConfirmed)
	wantEvent(t, events.next(t), ids[2], order.StatusConfirmed)
	if o := e.getOrder(t, buyers[2], ids[2], 200); o.QueuePosition != nil {
		t.Errorf("confirmed order has queue position %d", *o.QueuePosition)
	}
}
