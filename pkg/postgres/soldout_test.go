package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// skuRow is what another connection sees committed of a SKU.
type skuRow struct{ Stock, Version int64 }

func (e *ptEnv) committed(id uuid.UUID) skuRow {
	e.t.Helper()
	var r skuRow
	if err := e.db.QueryRow(`SELECT stock, version FROM skus WHERE id = $1`, id).Scan(&r.Stock, &r.Version); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// markCall is one call of fakeMarks: what was asked, and what another
// connection saw committed of each SKU at that moment.
type markCall struct {
	SKUs []order.SKUVersion
	Seen []skuRow
}

// fakeMarks records what a partition asks of the sold-out markers.
type fakeMarks struct {
	e *ptEnv

	mu         sync.Mutex
	reopens    []markCall
	marks      []markCall
	failReopen error
}

func (f *fakeMarks) call(vs []order.SKUVersion) markCall {
	c := markCall{SKUs: vs}
	for _, v := range vs {
		c.Seen = append(c.Seen, f.e.committed(v.SKU))
	}
	return c
}

func (f *fakeMarks) Reopen(ctx context.Context, vs []order.SKUVersion) error {
	c := f.call(vs)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reopens = append(f.reopens, c)
	return f.failReopen
}

func (f *fakeMarks) MarkSoldOut(ctx context.Context, vs []order.SKUVersion) (int, error) {
	c := f.call(vs)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marks = append(f.marks, c)
	return len(vs), nil
}

// take returns and forgets the calls recorded so far.
func (f *fakeMarks) take() (reopens, marks []markCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reopens, marks = f.reopens, f.marks
	f.reopens, f.marks = nil, nil
	return reopens, marks
}

func withMarks(e *ptEnv) *fakeMarks {
	f := &fakeMarks{e: e}
	e.cfg.Marks = f
	return f
}

// TestSoldOutMarksFollowStock: a batch that leaves a SKU at stock 0 marks
// it after its commit at the version it committed; restock, cancel and
// expiry reopen it before their commit, while the committed stock is
// still 0, with the version they are about to commit.
func TestSoldOutMarksFollowStock(t *testing.T) {
	e := ptNew(t)
	f := withMarks(e)
	sku := e.sku(1, 2)
	check := func(step string, wantReopens, wantMarks []markCall) {
		t.Helper()
		reopens, marks := f.take()
		if diff := cmp.Diff(wantReopens, reopens); diff != "" {
			t.Errorf("%s: Reopen calls (-want +got):\n%s", step, diff)
		}
		if diff := cmp.Diff(wantMarks, marks); diff != "" {
			t.Errorf("%s: MarkSoldOut calls (-want +got):\n%s", step, diff)
		}
	}
	call := func(v int64, seen skuRow) []markCall {
		return []markCall{{SKUs: []order.SKUVersion{{SKU: sku, Version: v}}, Seen: []skuRow{seen}}}
	}

	// Selling the last units marks the SKU at the version committed.
	first := e.checkout("u1", sku, 1)
	e.apply(first, e.checkout("u2", sku, 1))
	check("sold out", nil, call(1, skuRow{0, 1}))

	// A batch that finds it at 0 marks it again at the version it read.
	e.apply(e.checkout("u3", sku, 1))
	check("rejected at 0", nil, call(1, skuRow{0, 1}))

	// A restock reopens it before its commit: others still see stock 0.
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 1, At: time.Now(), Restock: &order.Restock{SKUID: sku, Quantity: 2}})
	check("restock", call(2, skuRow{0, 1}), nil)
	if got := e.committed(sku); got != (skuRow{2, 2}) {
		t.Fatalf("after restock: %+v", got)
	}

	// Stock above 0 going down, or up, needs neither.
	e.apply(e.checkout("u4", sku, 1))
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 1, At: time.Now(), Restock: &order.Restock{SKUID: sku, Quantity: 1}})
	check("above 0", nil, nil)
	e.apply(e.checkout("u5", sku, 2))
	check("sold out again", nil, call(5, skuRow{0, 5}))

	// A cancel gives a unit back: reopened before its commit.
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 1, At: time.Now(), Cancel: &order.Cancel{OrderID: first.Checkout.OrderID, UserID: "u1"}})
	check("cancel", call(6, skuRow{0, 5}), nil)

	// An expiry too.
	e.apply(e.checkout("u6", sku, 1))
	check("sold out by u6", nil, call(7, skuRow{0, 7}))
	held := e.sku(1, 1, ptHold(1))
	c := e.checkout("u7", held, 1)
	e.apply(c)
	f.take()
	waitHold(t, time.Second)
	e.expire(1)
	reopens, _ := f.take()
	want := []markCall{{SKUs: []order.SKUVersion{{SKU: held, Version: 2}}, Seen: []skuRow{{0, 1}}}}
	if diff := cmp.Diff(want, reopens); diff != "" {
		t.Errorf("expiry: Reopen calls (-want +got):\n%s", diff)
	}
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusExpired {
		t.Errorf("order %s", st)
	}
}

// TestSoldOutReopenFailureDoesNotCommit: when the markers cannot be
// reopened (Redis is down), stock does not come back: the commands that
// would bring it back from 0 are held (BatchResult.Held, not applied, not
// recorded as processed), and the rest of the batch is applied without
// them rather than waiting with them. Applied again once Redis answers,
// the held ones take effect.
func TestSoldOutReopenFailureDoesNotCommit(t *testing.T) {
	e := ptNew(t)
	f := withMarks(e)
	gone := e.sku(2, 1)
	other := e.sku(2, 5)
	first := e.checkout("u1", gone, 1)
	e.apply(first)
	f.take()

	f.failReopen = order.Errorf(order.EUNAVAILABLE, "redis down")
	restock := order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 2, At: time.Now(), Restock: &order.Restock{SKUID: gone, Quantity: 4}}
	cancel := order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 2, At: time.Now(), Cancel: &order.Cancel{OrderID: first.Checkout.OrderID, UserID: "u1"}}
	buyOther, buyGone := e.checkout("u2", other, 1), e.checkout("u3", gone, 1)
	res, err := e.db.ApplyBatch(context.Background(), 2, []order.Command{restock, buyOther, cancel, buyGone}, e.cfg)
	if err != nil {
		t.Fatalf("a batch with the markers down: %v, want the commands that need them held", err)
	}
	if diff := cmp.Diff([]uuid.UUID{restock.ID, cancel.ID}, res.Held); diff != "" {
		t.Errorf("held commands (-want +got):\n%s", diff)
	}
	if order.ErrorCode(res.HeldErr) != order.EUNAVAILABLE {
		t.Errorf("why held: %v", res.HeldErr)
	}
	if reopens, _ := f.take(); len(reopens) != 1 {
		t.Errorf("%d Reopen calls, want one per batch", len(reopens))
	}
	if got := e.committed(gone); got != (skuRow{0, 1}) {
		t.Errorf("after a failed reopen: %+v, want stock 0 at version 1", got)
	}
	if st, _ := e.status(first.Checkout.OrderID); st != order.StatusConfirmed {
		t.Errorf("the order to cancel is %s, want confirmed until its cancel is applied", st)
	}
	if st, _ := e.status(buyOther.Checkout.OrderID); st != order.StatusConfirmed {
		t.Errorf("the checkout of the other SKU is %s, want confirmed", st)
	}
	// Decided against the stock committed, 0: what it would have been
	// had the restock arrived later.
	if st, reason := e.status(buyGone.Checkout.OrderID); st != order.StatusRejected || reason != order.RejectOutOfStock {
		t.Errorf("the checkout of the sold-out SKU is %s %s, want rejected out_of_stock", st, reason)
	}

	f.failReopen = nil
	res = e.apply(restock, buyOther, cancel, buyGone)
	if len(res.Held) != 0 || res.Applied != 2 || res.Skipped != 2 {
		t.Errorf("applied again: %d applied, %d skipped, held %v; want the 2 held ones applied", res.Applied, res.Skipped, res.Held)
	}
	if got := e.committed(gone); got != (skuRow{5, 2}) {
		t.Errorf("after the retry: %+v", got)
	}
	if st, _ := e.status(first.Checkout.OrderID); st != order.StatusCancelled {
		t.Errorf("the cancelled order is %s", st)
	}
}

// rejection returns the record of an ingress rejection of checkout c,
// naming skus.
func rejection(c order.Command, skus ...uuid.UUID) order.Command {
	return order.Command{
		ID: order.RejectionCommandID(c.Checkout.OrderID), Kind: order.KindRecordRejection, Partition: c.Partition, At: c.At,
		Rejection: &order.Rejection{Checkout: *c.Checkout, Reason: order.RejectOutOfStock, SKUs: skus, DecidedAt: time.Now()},
	}
}

// decisionEvents counts the order.confirmed and order.rejected events of
// order id in the outbox.
func (e *ptEnv) decisionEvents(id uuid.UUID) map[order.EventType]int {
	e.t.Helper()
	out := map[order.EventType]int{}
	for _, r := range e.outbox() {
		var ev order.Event
		if err := json.Unmarshal(r.Payload, &ev); err != nil || ev.Subject != id.String() {
			continue
		}
		if ev.Type == order.EventConfirmed || ev.Type == order.EventRejected {
			out[ev.Type]++
		}
	}
	return out
}

func TestRecordRejections(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(2, 0)
	other := e.sku(3, 5)
	c := e.checkout("u1", sku, 2, other, 1)
	c.Checkout.Prices = map[uuid.UUID]int64{sku: 900}
	rej := rejection(c, sku)

	res, err := e.db.RecordRejections(ctx, []order.Command{rej, rej})
	if err != nil {
		t.Fatal(err)
	}
	id := c.Checkout.OrderID
	if res.Applied != 1 || res.Outbox != 1 || len(res.Orders) != 1 {
		t.Fatalf("result %+v", res)
	}
	got := res.Orders[0]
	want := []order.Line{
		{SKUID: sku, Name: "sku", Quantity: 2, UnitPrice: 900, LineTotal: 1800},
		{SKUID: other, Name: "sku", Quantity: 1, UnitPrice: 1000, LineTotal: 1000},
	}
	if diff := cmp.Diff(want, got.Lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if got.Status != order.StatusRejected || got.RejectReason != order.RejectOutOfStock || !slicesEqual(got.RejectSKUs, []uuid.UUID{sku}) ||
		got.GrandTotal != 3800 || got.Currency != "EUR" || got.DecidedAt == nil {
		t.Errorf("order %+v", got)
	}
	stored, err := e.db.StoredOrderForTest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, stored); diff != "" {
		t.Errorf("stored order (-recorded +stored):\n%s", diff)
	}
	if st, reason := e.status(id); st != order.StatusRejected || reason != order.RejectOutOfStock {
		t.Errorf("status %s %s", st, reason)
	}

	// A redelivery, and the order's checkout reaching its partition (a
	// retry republished it), change nothing: one decision event.
	res, err = e.db.RecordRejections(ctx, []order.Command{rej})
	if err != nil || res.Applied != 0 || res.Skipped != 1 || len(res.Orders) != 1 || res.Orders[0].Status != order.StatusRejected {
		t.Errorf("redelivered: %+v, %v", res, err)
	}
	e.apply(c)
	if got := e.stock(other); got != (ptStock{5, 0}) {
		t.Errorf("stock of the other SKU %+v", got)
	}
	if got := e.decisionEvents(id); !cmp.Equal(got, map[order.EventType]int{order.EventRejected: 1}) {
		t.Errorf("decision events %v", got)
	}

	// The other way round: the partition decided first.
	c2 := e.checkout("u2", other, 1)
	e.apply(c2)
	res, err = e.db.RecordRejections(ctx, []order.Command{rejection(c2, other)})
	if err != nil || res.Applied != 0 || len(res.Orders) != 1 || res.Orders[0].Status != order.StatusConfirmed {
		t.Errorf("after the partition: %+v, %v", res, err)
	}
	if got := e.decisionEvents(c2.Checkout.OrderID); !cmp.Equal(got, map[order.EventType]int{order.EventConfirmed: 1}) {
		t.Errorf("decision events %v", got)
	}

	// An address that does not exist is poison: that command only.
	bad := e.checkout("u3", sku, 1)
	bad.Checkout.AddressID = uuid.New()
	_, err = e.db.RecordRejections(ctx, []order.Command{rejection(bad, sku)})
	var pe *postgres.PoisonError
	if !errors.As(err, &pe) || pe.CommandID != order.RejectionCommandID(bad.Checkout.OrderID) {
		t.Errorf("unknown address: %v, want a PoisonError", err)
	}
}

func slicesEqual(a, b []uuid.UUID) bool { return cmp.Equal(a, b) }
