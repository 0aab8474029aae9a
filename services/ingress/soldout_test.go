package ingress

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// withBatchPublisher publishes through the batching publisher orderd uses.
func withBatchPublisher(t *testing.T) orderOption {
	return func(e *orderEnv, cfg *Config, d *Deps) {
		bp := natsbus.NewBatchPublisher(e.JS, natsbus.BatchConfig{Partitions: cfg.Partitions, Timeout: time.Second})
		t.Cleanup(bp.Close)
		d.Publisher = bp
	}
}

// markSoldOut marks sku sold out as its partition would after selling the
// last unit.
func (e *orderEnv) markSoldOut(t *testing.T, sku uuid.UUID) {
	t.Helper()
	if _, err := e.Redis.MarkSoldOut(context.Background(), []order.SKUVersion{{SKU: sku, Version: 1}}); err != nil {
		t.Fatal(err)
	}
}

// ingressRecords returns the records of ingress decisions in ORDER_CMDS.
func (e *orderEnv) ingressRecords(t *testing.T) []order.Command {
	t.Helper()
	ctx := context.Background()
	s, err := e.JS.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []order.Command
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || m.Subject != order.IngressSubject {
			continue
		}
		cmds, err := order.DecodeIngressEnvelope(m.Data, e.Server.cfg.Partitions)
		if err != nil {
			t.Fatalf("record %d is poison: %v", seq, err)
		}
		out = append(out, cmds...)
	}
	return out
}

// checkoutCommand builds the checkout command of b for lines as placeOrder
// does.
func (e *orderEnv) checkoutCommand(b buyer, lines ...order.LineRequest) order.Command {
	id := uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)
	return order.Command{
		ID: id, Kind: order.KindCheckout, Partition: order.HomePartition(lines, e.Server.cfg.Partitions), At: now,
		Checkout: &order.Checkout{
			OrderID: id, OrderNumber: order.NumberFor(now, 1), UserID: b.ID, AddressID: b.Address,
			PaymentMethod: order.PayCard, Lines: lines, ShippingFee: testShippingFee,
		},
	}
}

// TestSoldOutAtTheIngressFunctions drives soldOutLines and rejectSoldOut
// directly: the SKUs marked sold out are found in one read, the rejected
// order is cached at once (GET answers rejected) and its record goes to
// the ingress subject, not to a partition.
func TestSoldOutAtTheIngressFunctions(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withBatchPublisher(t))
	ctx := context.Background()
	b := e.newBuyer(t)
	gone := e.createSKU(t, newSKU("Sneaker", 12900, 0))
	left := e.createSKU(t, newSKU("Socks", 500, 10))
	lines := []order.LineRequest{{SKUID: left.ID, Quantity: 1}, {SKUID: gone.ID, Quantity: 2}}

	if got, err := e.Server.soldOutLines(ctx, lines); err != nil || len(got) != 0 {
		t.Fatalf("before any marker: %v, %v", got, err)
	}
	e.markSoldOut(t, gone.ID)
	got, err := e.Server.soldOutLines(ctx, lines)
	if err != nil || !cmp.Equal(got, []uuid.UUID{gone.ID}) {
		t.Fatalf("soldOutLines = %v, %v; want [%s]", got, err, gone.ID)
	}

	cmd := e.checkoutCommand(b, lines...)
	rec := &order.Idempotency{RequestHash: "h", Command: cmd}
	if err := e.Server.rejectSoldOut(ctx, cmd, got, rec); err != nil {
		t.Fatal(err)
	}
	o := e.getOrder(t, b, cmd.ID, http.StatusOK)
	if o.Status != order.StatusRejected || o.RejectReason != order.RejectOutOfStock || !cmp.Equal(o.RejectSKUs, []uuid.UUID{gone.ID}) {
		t.Errorf("order %+v: want rejected out_of_stock naming %s", o, gone.ID)
	}
	wantLines := []order.Line{
		{SKUID: left.ID, Name: "Socks", Quantity: 1, UnitPrice: 500, LineTotal: 500},
		{SKUID: gone.ID, Name: "Sneaker", Quantity: 2, UnitPrice: 12900, LineTotal: 25800},
	}
	if diff := cmp.Diff(wantLines, o.Lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if o.GrandTotal != 26300+testShippingFee || o.Currency != "EUR" {
		t.Errorf("totals %d %s", o.GrandTotal, o.Currency)
	}
	if r, err := e.Redis.Idempotency(ctx, cmd.ID); err != nil || r.RequestHash != "h" {
		t.Errorf("idempotency record %+v, %v", r, err)
	}
	recs := e.ingressRecords(t)
	if len(recs) != 1 {
		t.Fatalf("%d ingress records, want 1", len(recs))
	}
	r := recs[0]
	if r.ID != order.RejectionCommandID(cmd.ID) || r.Kind != order.KindRecordRejection || r.Partition != cmd.Partition ||
		r.Rejection.Checkout.OrderID != cmd.ID || !cmp.Equal(r.Rejection.SKUs, []uuid.UUID{gone.ID}) {
		t.Errorf("record %+v", r)
	}
	if n := e.commandCount(t); n != 1 {
		t.Errorf("%d command messages, want the one record", n)
	}
}

// TestSoldOutRejectionPublishFails: JetStream refuses the record, so the
// buyer gets 503 and nothing of the order stays visible.
func TestSoldOutRejectionPublishFails(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, func(e *orderEnv, _ *Config, d *Deps) {
		d.Publisher = &stopJetStream{next: d.Publisher, stop: func() { e.NATS.Shutdown(); e.NATS.WaitForShutdown() }}
	})
	ctx := context.Background()
	b := e.newBuyer(t)
	gone := e.createSKU(t, newSKU("Sneaker", 12900, 0))
	e.markSoldOut(t, gone.ID)
	cmd := e.checkoutCommand(b, order.LineRequest{SKUID: gone.ID, Quantity: 1})
	err := e.Server.rejectSoldOut(ctx, cmd, []uuid.UUID{gone.ID}, nil)
	if order.ErrorCode(err) != order.EUNAVAILABLE {
		t.Fatalf("rejectSoldOut with JetStream gone: %v, want EUNAVAILABLE", err)
	}
	if _, err := e.Redis.OrderStatus(ctx, cmd.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("cached order after a failed publish: %v", err)
	}
}

// TestCheckoutSoldOutAtTheIngress goes through POST /v1/orders: a checkout
// of a SKU marked sold out answers 202 "pending" (the schema of every 202)
// and GET answers rejected at once; its record goes to the ingress subject
// and no command to the partition. Once the marker is gone (stock came
// back), checkouts go to the partition again.
func TestCheckoutSoldOutAtTheIngress(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withBatchPublisher(t))
	b := e.newBuyer(t)
	gone := e.createSKU(t, newSKU("Sneaker", 12900, 0))
	e.markSoldOut(t, gone.ID)
	body := directBody(b, order.LineRequest{SKUID: gone.ID, Quantity: 1})
	a := e.mustCheckout(t, b, body, "sold-out-1")
	if a.Status != order.StatusPending {
		t.Errorf("202 status %q", a.Status)
	}
	// The marker was written before the checkout and nothing removes it:
	// the ingress must decide. An order still pending, with no record on
	// the ingress subject, is the shortcut not firing: a regression.
	o := e.getOrder(t, b, a.OrderID, http.StatusOK)
	if o.Status == order.StatusPending && len(e.ingressRecords(t)) == 0 {
		t.Fatalf("order %s is pending and no record went to %s: the sold-out shortcut did not fire for a SKU marked sold out", a.OrderID, order.IngressSubject)
	}
	if o.Status != order.StatusRejected || o.RejectReason != order.RejectOutOfStock || !cmp.Equal(o.RejectSKUs, []uuid.UUID{gone.ID}) {
		t.Errorf("order %+v: want rejected out_of_stock naming %s", o, gone.ID)
	}
	recs := e.ingressRecords(t)
	if len(recs) != 1 || recs[0].Rejection.Checkout.OrderID != a.OrderID || recs[0].Rejection.Checkout.OrderNumber != a.OrderNumber {
		t.Errorf("records %+v", recs)
	}
	if n := e.commandCount(t); n != 1 {
		t.Errorf("%d command messages, want only the record", n)
	}
	// The same key and body again: the same answer, nothing published.
	if again := e.mustCheckout(t, b, body, "sold-out-1"); again.OrderID != a.OrderID || again.OrderNumber != a.OrderNumber {
		t.Errorf("retry %+v, want %+v", again, a)
	}
	if n := e.commandCount(t); n != 1 {
		t.Errorf("%d command messages after the retry", n)
	}

	// Stock came back: the partition deleted the marker before its commit.
	if err := e.Redis.Reopen(context.Background(), []order.SKUVersion{{SKU: gone.ID, Version: 2}}); err != nil {
		t.Fatal(err)
	}
	a2 := e.mustCheckout(t, b, body, "")
	if o := e.getOrder(t, b, a2.OrderID, http.StatusOK); o.Status != order.StatusPending {
		t.Errorf("after the marker went: %s, want pending", o.Status)
	}
	if n := e.commandCount(t); n != 2 {
		t.Errorf("%d command messages, want the record and the checkout", n)
	}
}

// TestSoldOutLeavesOtherReasonsToThePartition: a sold-out SKU whose sale is
// not open, or an order of two currencies, goes to the partition, which
// rejects it for that reason first.
func TestSoldOutLeavesOtherReasonsToThePartition(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	closed := newSKU("Not yet", 100, 0)
	closed.SaleStartsAt = &later
	notOpen := e.createSKU(t, closed)
	usd := newSKU("Dollar socks", 100, 0)
	usd.Currency = "USD"
	dollar := e.createSKU(t, usd)
	euro := e.createSKU(t, newSKU("Euro socks", 100, 0))
	for _, id := range []uuid.UUID{notOpen.ID, dollar.ID, euro.ID} {
		e.markSoldOut(t, id)
	}
	for name, lines := range map[string][]order.LineRequest{
		"sale not open":  {{SKUID: notOpen.ID, Quantity: 1}},
		"two currencies": {{SKUID: euro.ID, Quantity: 1}, {SKUID: dollar.ID, Quantity: 1}},
	} {
		if got, err := e.Server.soldOutLines(ctx, lines); err != nil || len(got) != 0 {
			t.Errorf("%s: soldOutLines = %v, %v; want none", name, got, err)
		}
	}
	if got, err := e.Server.soldOutLines(ctx, []order.LineRequest{{SKUID: euro.ID, Quantity: 1}}); err != nil || len(got) != 1 {
		t.Errorf("euro alone: soldOutLines = %v, %v", got, err)
	}
}
