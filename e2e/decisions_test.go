package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// TestRepeatedDecisionCaught decides an order a second time, with the same
// outcome, as a second writer that skipped the processed-command guard
// would: the stream shows one decision event (the copy has the same id),
// so the stream check passes, and the count of decision writes catches it.
func TestRepeatedDecisionCaught(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	st.startWorker(t, "worker-1")
	ctx := context.Background()

	sku := api.createSKU(t, "repeated", 5)
	b := api.newBuyers(t, 1)[0]
	acc, _, err := api.checkout(ctx, b, directBody(b, sku.ID, 1), "")
	if err != nil {
		t.Fatal(err)
	}
	o, err := api.awaitDecision(ctx, b, acc.OrderID)
	if err != nil || o.Status != order.StatusConfirmed {
		t.Fatalf("order %+v, %v; want confirmed", o, err)
	}
	want := map[uuid.UUID]order.Status{o.ID: order.StatusConfirmed}
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, want, 30*time.Second), want)
	if problem, err := repeatedDecisions(ctx, st.DB); err != nil || problem != "" {
		t.Fatalf("before the repeat: %q, %v", problem, err)
	}

	// The same decision again, once the first was relayed.
	m, err := postgres.EventMessage(order.OrderEvent(o, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	tx := st.DB.MustBegin()
	if err := postgres.InsertOutbox(ctx, tx, []postgres.OutboxMessage{m}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	err = eventually(10*time.Second, func() error {
		var n int
		if err := st.DB.Get(&n, `SELECT count(*) FROM outbox`); err != nil || n != 0 {
			return fmt.Errorf("outbox rows %d (%v)", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Blind: one distinct decision event.
	checkOneDecisionEach(t, awaitDecisionEvents(t, st.JS, want, 30*time.Second), want)
	// Seen.
	problem, err := repeatedDecisions(ctx, st.DB)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(problem, "1 orders decided more than once") || !strings.Contains(problem, o.ID.String()) {
		t.Errorf("repeated decisions: %q, want order %s named", problem, o.ID)
	}
	// The repeat was this test's own doing: clear it, or the check every
	// stack runs at its end (checkDecidedOnceAtEnd) fails the test.
	if _, err := st.DB.Exec(`UPDATE order_decisions SET writes = 1`); err != nil {
		t.Fatal(err)
	}
}
