package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

// TestStatusNeverGoesBack: a buyer's reads of an order's status must never
// go back (pending after confirmed). 20 buyers check out and cancel while
// no worker runs; when the worker starts, it confirms and cancels each order
// in one batch. Each buyer long-polls the decision, then reads the order at
// once: that read must not answer pending. (The events can overtake the
// status cache; the worker now writes the cache before it wakes the relay,
// and the ingress answers the later of the cache and the latest status its
// hub has seen.)
func TestStatusNeverGoesBack(t *testing.T) {
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
