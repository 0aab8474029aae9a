package ingress

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

// TestSoldOutRejectionAnswered503IsNeverRecorded: JetStream swallows the
// record of a checkout the ingress rejected itself (sold out) without
// acknowledging it, so the buyer is answered 503. When the record reaches
// the worker after all, it writes nothing: the buyer was told nothing was
// written. A retry with the key then gets its answer.
func TestSoldOutRejectionAnswered503IsNeverRecorded(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withBatchPublisher(t))
	ctx := context.Background()
	b := e.newBuyer(t)
	gone := e.createSKU(t, newSKU("Sneaker", 12900, 0))
	e.markSoldOut(t, gone.ID)
	body := directBody(b, order.LineRequest{SKUID: gone.ID, Quantity: 1})

	// What the ingress publishes on its decisions' subject, as it goes out.
	sent, err := e.NC.SubscribeSync(order.IngressSubject)
	if err != nil {
		t.Fatal(err)
	}
	resume := e.stallCommands(t)
	resp, data := e.checkout(t, b, body, "stalled")
	wantProblem(t, resp, data, http.StatusServiceUnavailable)
	m, err := sent.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("the record was never sent: %v", err)
	}
	records, err := order.DecodeIngressEnvelope(m.Data, e.Server.cfg.Partitions)
	if err != nil || len(records) != 1 {
		t.Fatalf("records %+v, %v", records, err)
	}

	// The late message reaches the worker.
	res, err := e.DB.RecordRejections(ctx, records)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 0 {
		t.Errorf("the record of a checkout answered 503 was written: %+v", res)
	}
	id := records[0].Rejection.Checkout.OrderID
	if _, err := e.DB.Order(ctx, id); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("order of a checkout answered 503: %v, want ENOTFOUND", err)
	}

	// A retry with the key sends the checkout to its partition.
	resume()
	a := e.mustCheckout(t, b, body, "stalled")
	if a.OrderID != id {
		t.Errorf("the retry placed order %s, want %s", a.OrderID, id)
	}
	if cmds := e.commands(t); len(cmds) != 1 || cmds[0].Kind != order.KindCheckout || cmds[0].Checkout.OrderID != id {
		t.Errorf("commands after the retry %+v, want the order's checkout", cmds)
	}
}
