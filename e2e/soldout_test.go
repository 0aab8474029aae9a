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

// TestSoldOutAtTheIngressThroughHTTP: once a SKU is sold out, a checkout of
// it is rejected out_of_stock at once (GET answers rejected right after the
// 202) without its partition, and the order is in PostgreSQL with exactly
// one order.rejected event; after a restock, checkouts are accepted and
// confirmed again.
func TestSoldOutAtTheIngressThroughHTTP(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	st.startWorker(t, "worker-1")
	ctx := context.Background()

	sku := api.createSKU(t, "last sneakers", 2)
	bs := api.newBuyers(t, 5)
	decided := func(b buyer, key string) *order.Order {
		t.Helper()
		acc, _, err := api.checkout(ctx, b, directBody(b, sku.ID, 1), key)
		if err != nil {
			t.Fatal(err)
		}
		o, err := api.awaitDecision(ctx, b, acc.OrderID)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	want := map[uuid.UUID]order.Status{}
	for _, b := range bs[:2] {
		o := decided(b, "")
		if o.Status != order.StatusConfirmed {
			t.Fatalf("order of %s is %s, want confirmed", b.ID, o.Status)
		}
		want[o.ID] = o.Status
	}
	// The partition marks the SKU after its commit.
	err := eventually(10*time.Second, func() error {
		if m, err := st.Redis.SoldOut(ctx, []uuid.UUID{sku.ID}); err != nil || !m[sku.ID] {
			return fmt.Errorf("SKU not marked sold out (%v)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Sold out: rejected at once, by the ingress. The marker is in Redis
	// (waited for above) and nothing removes it before the restock below,
	// so the ingress must decide: a checkout that reaches the partition is
	// the shortcut not firing, a regression.
	late := bs[2]
	acc, _, err := api.checkout(ctx, late, directBody(late, sku.ID, 1), "late-1")
	if err != nil {
		t.Fatal(err)
	}
	o, err := api.order(ctx, late, acc.OrderID, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = eventually(10*time.Second, func() error {
		var status, reason string
		if err := st.DB.QueryRow(`SELECT status, reject_reason FROM orders WHERE id = $1`, acc.OrderID).Scan(&status, &reason); err != nil {
			return err
		}
		if status != "rejected" || reason != "out_of_stock" {
			return fmt.Errorf("PostgreSQL: %s %s", status, reason)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var atPartition int
	if err := st.DB.Get(&atPartition, `SELECT count(*) FROM processed_commands WHERE id = $1`, acc.OrderID); err != nil {
		t.Fatal(err)
	}
	if atPartition != 0 {
		t.Fatalf("order %s was decided by its partition (%d processed command): the sold-out shortcut did not fire for a SKU marked sold out", acc.OrderID, atPartition)
	}
	if o.Status != order.StatusRejected || o.RejectReason != order.RejectOutOfStock || len(o.RejectSKUs) != 1 || o.RejectSKUs[0] != sku.ID {
		t.Fatalf("order after a sell-out read right after its 202: %s %s %v, want rejected out_of_stock naming %s", o.Status, o.RejectReason, o.RejectSKUs, sku.ID)
	}

	// After a restock, checkouts are accepted and confirmed again.
	api.mustCall(t, "POST", "/v1/skus/"+sku.ID.String()+"/restock", mint(t, "admin", true), map[string]int64{"quantity": 1}, http.StatusAccepted, nil)
	wantSKU(t, api, sku.ID, 1, 2, 1)
	again := decided(bs[3], "")
	if again.Status != order.StatusConfirmed {
		t.Fatalf("order after the restock is %s %s, want confirmed", again.Status, again.RejectReason)
	}
	wantSKU(t, api, sku.ID, 0, 3, 1)

	// Downstream: one decision each.
	want[acc.OrderID], want[again.ID] = order.StatusRejected, order.StatusConfirmed
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, want, 30*time.Second), want)
}
