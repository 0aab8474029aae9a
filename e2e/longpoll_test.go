package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

// TestLongPollOfDecidedOrder: a buyer who got the 202 (pending) long-polls
// GET /v1/orders/{id}?wait=5s to learn the decision. If the order was
// confirmed before the long-poll arrived, the answer must come at once (the
// long-poll waits only while the order is at the status the client last
// saw, ?since=, pending by default), not after the whole wait.
func TestLongPollOfDecidedOrder(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	st.startWorker(t, "worker-1")
	ctx := context.Background()

	sku := api.createSKU(t, "poster", 1)
	b := api.newBuyers(t, 1)[0]
	acc, _, err := api.checkout(ctx, b, directBody(b, sku.ID, 1), "poster")
	if err != nil {
		t.Fatal(err)
	}
	// The decision lands before the buyer's long-poll.
	err = eventually(10*time.Second, func() error {
		o, err := api.order(ctx, b, acc.OrderID, 0)
		if err == nil && o.Status != order.StatusConfirmed {
			err = errors.New("order " + acc.OrderID.String() + " is " + string(o.Status))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	o, err := api.order(ctx, b, acc.OrderID, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); o.Status != order.StatusConfirmed || took > time.Second {
		t.Errorf("GET ?wait=5s of an order confirmed since the 202 answered %s after %s; want confirmed at once", o.Status, took.Round(time.Millisecond))
	}
}
