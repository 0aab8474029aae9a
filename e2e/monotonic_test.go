package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

// TestStatusNeverGoesBack shows a known defect, skipped unless
// E2E_KNOWN_BUGS=1: a buyer's reads of an order's status must never go
// back (pending after confirmed). 20 buyers check out and cancel while no
// worker runs; when the worker starts, it confirms and cancels each order in
// one batch. Each buyer long-polls the decision, then reads the order at
// once: that read sometimes answers pending.
//
// Why: the long-poll is woken by the order's event, and the event can
// overtake the status cache. The worker commits the batch, wakes the relay
// (and PostgreSQL's NOTIFY wakes every relay) and only then writes the
// decisions to Redis (services/worker/partition.go, wakeRelay before
// cache); the relay publishes order.confirmed, the ingress's hub hands it
// to the long-poll, and the buyer's next GET reads the status cache, still
// pending. It also happens, less often, to plain decisions under load.
func TestStatusNeverGoesBack(t *testing.T) {
	if os.Getenv("E2E_KNOWN_BUGS") == "" {
		t.Skip("known defect: the status cache lags the events (set E2E_KNOWN_BUGS=1 to run)")
	}
	t.Parallel()
	const buyers = 20
	st := newStack(t)
	api := st.startIngress(t, "api-1")
	ctx := context.Background()

	sku := api.createSKU(t, "scarf", buyers)
	bs := api.newBuyers(t, buyers)
	accs := checkoutAll(t, api, bs, func(b buyer) map[string]any { return directBody(b, sku.ID, 1) })
	for i, b := range bs {
		api.mustCall(t, "POST", "/v1/orders/"+accs[i].OrderID.String()+"/cancel", b.Token, nil, http.StatusAccepted, nil)
	}

	waitCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	errs := make([]error, buyers)
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() {
			id := accs[i].OrderID
			polled, err := api.order(waitCtx, b, id, 10*time.Second)
			if err != nil {
				errs[i] = err
				return
			}
			read, err := api.order(waitCtx, b, id, 0)
			if err != nil {
				errs[i] = err
				return
			}
			if order.StatusRank(read.Status) < order.StatusRank(polled.Status) {
				errs[i] = fmt.Errorf("order %s: the long-poll answered %s, the read right after it %s", id, polled.Status, read.Status)
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // the long-polls are waiting
	st.startWorker(t, "worker-1")
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
