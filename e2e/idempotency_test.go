package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// TestIngressCrashRetrySameOrder: a buyer whose checkout was published but
// never answered (the ingress died between the PubAck and the 202, and
// Redis lost what it wrote) retries with the same Idempotency-Key against
// another ingress: the retry gets the first answer (the same order id and
// number), the same key with another body is refused, and PostgreSQL ends
// with exactly one order, whether the retry comes before the worker
// applied the first command or after.
func TestIngressCrashRetrySameOrder(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	first := st.startIngress(t, "api-1")
	second := st.startIngress(t, "api-2")
	ctx := context.Background()

	sku := first.createSKU(t, "kettle", 10)
	bs := first.newBuyers(t, 2)
	decisions := map[uuid.UUID]order.Status{}

	// 1. No worker runs yet: both commands wait in the stream.
	b := bs[0]
	body := directBody(b, sku.ID, 1)
	acc1, _, err := first.checkout(ctx, b, body, "crash-before")
	if err != nil {
		t.Fatal(err)
	}
	st.forgetCheckout(t, b, acc1.OrderID)
	// The same key with another body is refused (SPEC 3.2: 422, or 409
	// while the first is in flight), though Redis forgot the key and no
	// partition has written the order.
	if _, resp, _ := second.checkout(ctx, b, directBody(b, sku.ID, 2), "crash-before"); resp == nil ||
		(resp.Status != http.StatusUnprocessableEntity && resp.Status != http.StatusConflict) {
		t.Errorf("same key, other body, after Redis lost the key and before the worker ran = %v, want 422 (or 409)", resp)
	}
	acc2, _, err := second.checkout(ctx, b, body, "crash-before")
	if err != nil {
		t.Fatal(err)
	}
	if acc2.OrderID != acc1.OrderID || acc2.OrderNumber != acc1.OrderNumber {
		t.Fatalf("retry after the crash: order %s number %s, want the first answer %s %s",
			acc2.OrderID, acc2.OrderNumber, acc1.OrderID, acc1.OrderNumber)
	}
	// And after the retry, which wrote the key's record again.
	if _, resp, _ := second.checkout(ctx, b, directBody(b, sku.ID, 2), "crash-before"); resp == nil || resp.Status != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body, before the worker ran = %v, want 422", resp)
	}
	st.startWorker(t, "worker-1")
	o := awaitOne(t, second, b, acc1.OrderID)
	decisions[o.ID] = o.Status
	if o.Number != acc1.OrderNumber {
		t.Errorf("the order's number is %s, want the first attempt's %s", o.Number, acc1.OrderNumber)
	}

	// 2. The worker decided the first attempt before the retry.
	b = bs[1]
	body = directBody(b, sku.ID, 1)
	acc1, _, err = first.checkout(ctx, b, body, "crash-after")
	if err != nil {
		t.Fatal(err)
	}
	o = awaitOne(t, first, b, acc1.OrderID)
	decisions[o.ID] = o.Status
	st.forgetCheckout(t, b, acc1.OrderID)
	acc2, resp, err := second.checkout(ctx, b, body, "crash-after")
	if err != nil {
		t.Fatal(err)
	}
	if acc2.OrderID != acc1.OrderID || acc2.OrderNumber != acc1.OrderNumber || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry after the decision: order %s number %s (Idempotent-Replayed %q), want the first answer %s %s replayed",
			acc2.OrderID, acc2.OrderNumber, resp.Header.Get("Idempotent-Replayed"), acc1.OrderID, acc1.OrderNumber)
	}
	if _, resp, _ := second.checkout(ctx, b, directBody(b, sku.ID, 2), "crash-after"); resp == nil || resp.Status != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body, after the decision = %v, want 422", resp)
	}
	if o, err := second.order(ctx, b, acc1.OrderID, 0); err != nil || o.Status != order.StatusConfirmed {
		t.Errorf("after the retry the order is %v (%v), want still confirmed", o, err)
	}

	// Every command has been applied (the work queue is empty), and each
	// buyer has exactly one order, each unit taken once.
	st.awaitCommandsApplied(t, 30*time.Second)
	for _, b := range bs {
		var n int
		if err := st.DB.Get(&n, `SELECT count(*) FROM orders WHERE user_id = $1`, b.ID); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("PostgreSQL holds %d orders of %s, want 1", n, b.ID)
		}
	}
	wantSKU(t, first, sku.ID, 8, 2, 0)
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, decisions, 30*time.Second), decisions)
}

// awaitOne waits for an order's decision and fails unless it is confirmed.
func awaitOne(t *testing.T, api *api, b buyer, id uuid.UUID) *order.Order {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := api.awaitDecision(ctx, b, id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusConfirmed {
		t.Fatalf("order %s is %s (%s), want confirmed", id, o.Status, o.RejectReason)
	}
	return o
}

// forgetCheckout deletes what the ingress wrote to Redis for a checkout
// (the pending status, the idempotency record and lock, the buyer's index
// of recent orders), as if Redis had lost it. It fails the test if the
// status or the record was not there: then nothing would be simulated.
func (s *stack) forgetCheckout(t *testing.T, b buyer, id uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	rdb := s.Redis.Client()
	must := []string{s.Prefix + "order:" + id.String(), s.Prefix + "idem:" + id.String()}
	n, err := rdb.Del(ctx, must...).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(must)) {
		t.Fatalf("deleted %d of the Redis keys %q: the status cache's keys are not where this test looks", n, must)
	}
	if err := rdb.Del(ctx, s.Prefix+"idemlock:"+id.String(), s.Prefix+"user_orders:"+b.ID).Err(); err != nil {
		t.Fatal(err)
	}
}

// awaitCommandsApplied waits until ORDER_CMDS, a work queue, is empty: every
// command published so far has been applied and acknowledged.
func (s *stack) awaitCommandsApplied(t *testing.T, d time.Duration) {
	t.Helper()
	err := eventually(d, func() error {
		str, err := s.JS.Stream(context.Background(), natsbus.CommandStream)
		if err != nil {
			return err
		}
		info, err := str.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d command messages still on %s", info.State.Msgs, natsbus.CommandStream)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
