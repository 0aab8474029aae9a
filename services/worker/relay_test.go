package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// TestRelayCountsEventHoldingsOnce: the relay counts what the events it
// relays hold (reconciliation's event count) when it deletes their rows,
// so a relay that dies between the publish and the delete, and publishes
// the rows again, counts them once: the count agrees with the orders.
func TestRelayCountsEventHoldingsOnce(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(2, 30, 0)
	cfg := postgres.PartitionConfig{Partitions: e.parts}
	ctx := context.Background()
	var all []order.Command
	for i := range 30 {
		c := e.checkout(fmt.Sprintf("u%d", i), sku, 1)
		all = append(all, c)
		if _, err := e.db.ApplyBatch(ctx, 2, []order.Command{c}, cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range all[:10] {
		if _, err := e.db.ApplyBatch(ctx, 2, []order.Command{e.cancel(c)}, cfg); err != nil {
			t.Fatal(err)
		}
	}

	w := e.worker("w1")
	var crashes atomic.Int32
	w.relay.afterPublish = func() error {
		if crashes.Add(1) <= 2 {
			return errors.New("crash between publish and delete")
		}
		return nil
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.relay.run(rctx) })
	deadline := time.Now().Add(20 * time.Second)
	for e.count(`SELECT count(*) FROM outbox`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("outbox not relayed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if crashes.Load() < 3 {
		t.Fatalf("%d publishes, want 2 crashes and a success", crashes.Load())
	}

	held, err := e.db.EventHoldings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	counts, err := e.db.StockCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 1 || counts[0].HeldByOrders != 20 || held[sku] != 20 {
		t.Errorf("held by the events %d, by the orders %+v; want 20 for both", held[sku], counts)
	}
}
