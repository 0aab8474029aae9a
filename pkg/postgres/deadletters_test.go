package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()

	d := &postgres.DeadLetter{SourceKey: "seq-7", Partition: 3, Subject: "orders.cmd.3", StreamSeq: 7,
		Reason: postgres.DeadMaxDeliveries, LastError: "boom", Deliveries: 10, Payload: []byte(`{"commands":[]}`)}
	id, created, err := db.RecordDeadLetter(ctx, d)
	if err != nil || !created || id == 0 {
		t.Fatalf("record: id %d, created %v, err %v", id, created, err)
	}
	// The same message again (another advisory subscriber, a retry) is the same row.
	again, created, err := db.RecordDeadLetter(ctx, d)
	if err != nil || created || again != id {
		t.Fatalf("record again: id %d (want %d), created %v, err %v", again, id, created, err)
	}
	second, _, err := db.RecordDeadLetter(ctx, &postgres.DeadLetter{SourceKey: "cmd-x", Partition: 0, Subject: "orders.cmd.0",
		Reason: postgres.DeadPoisonCommand, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}

	got, err := db.DeadLetter(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.StreamSeq != 7 || got.LastError != "boom" || got.Deliveries != 10 || string(got.Payload) != `{"commands":[]}` || got.ReplayedAt != nil {
		t.Errorf("read back %+v", got)
	}
	if _, err := db.DeadLetter(ctx, 999999); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("unknown id: %v, want ENOTFOUND", err)
	}

	page, err := db.DeadLetters(ctx, 0, 1)
	if err != nil || len(page) != 1 || page[0].ID != second {
		t.Fatalf("first page %+v, %v: want the newest (%d)", page, err, second)
	}
	page, err = db.DeadLetters(ctx, page[0].ID, 10)
	if err != nil || len(page) != 1 || page[0].ID != id {
		t.Fatalf("second page %+v, %v", page, err)
	}

	if n, err := db.UnreplayedDeadLetters(ctx); err != nil || n != 2 {
		t.Errorf("unreplayed %d, %v; want 2", n, err)
	}
	r, first, err := db.MarkDeadLetterReplayed(ctx, id)
	if err != nil || !first || r.ReplayedAt == nil {
		t.Fatalf("mark replayed: %+v, first %v, err %v", r, first, err)
	}
	r2, first, err := db.MarkDeadLetterReplayed(ctx, id)
	if err != nil || first || !r2.ReplayedAt.Equal(*r.ReplayedAt) {
		t.Fatalf("mark replayed twice: %+v, first %v, err %v", r2, first, err)
	}
	if _, _, err := db.MarkDeadLetterReplayed(ctx, 999999); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("replay unknown id: %v, want ENOTFOUND", err)
	}
	if n, err := db.UnreplayedDeadLetters(ctx); err != nil || n != 1 {
		t.Errorf("unreplayed %d, %v; want 1", n, err)
	}
}

// TestRecordDeadDecidesCheckouts: recording a dead letter decides, in its
// transaction, the orders of its checkouts that no partition wrote:
// rejected processing_failed with their lines and order.rejected events
// (an ingress rejection record as the ingress decided it), taking no
// stock. An order that exists is left as it is, a checkout that cannot be
// written is reported undecided, one no ingress could have accepted is
// ignored, and recording or replaying the dead letter again changes
// nothing.
func TestRecordDeadDecidesCheckouts(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(1, 5)
	dead, applied := e.checkout("u1", sku, 2), e.checkout("u2", sku, 1)
	e.apply(applied)
	noAddress := e.checkout("u3", sku, 1)
	noAddress.Checkout.AddressID = uuid.New()
	invalid := e.checkout("u4", sku, 1)
	invalid.Checkout.PaymentMethod = "barter"
	ingress := e.checkout("u5", sku, 1)
	rejection := order.Command{ID: order.RejectionCommandID(ingress.Checkout.OrderID), Kind: order.KindRecordRejection, Partition: 1, At: time.Now(),
		Rejection: &order.Rejection{Checkout: *ingress.Checkout, Reason: order.RejectOutOfStock, SKUs: []uuid.UUID{sku}, DecidedAt: time.Now()}}
	payload, err := order.EncodeEnvelope(dead, applied, noAddress, invalid, rejection)
	if err != nil {
		t.Fatal(err)
	}
	before := len(e.outbox())
	rec, err := e.db.RecordDead(ctx, &postgres.DeadLetter{SourceKey: "seq-1", Partition: 1, Subject: "orders.cmd.1", StreamSeq: 1,
		Reason: postgres.DeadMaxDeliveries, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	var decided []uuid.UUID
	for _, o := range rec.Decided.Orders {
		decided = append(decided, o.ID)
	}
	if diff := cmp.Diff([]uuid.UUID{dead.Checkout.OrderID, ingress.Checkout.OrderID}, decided); diff != "" || !rec.Created {
		t.Errorf("decided orders (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uuid.UUID{noAddress.Checkout.OrderID}, rec.Undecided); diff != "" {
		t.Errorf("undecided orders (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		id     uuid.UUID
		status order.Status
		reason order.RejectReason
	}{
		{dead.Checkout.OrderID, order.StatusRejected, order.RejectProcessingFailed},
		{applied.Checkout.OrderID, order.StatusConfirmed, ""},
		{ingress.Checkout.OrderID, order.StatusRejected, order.RejectOutOfStock},
	} {
		if st, reason := e.status(tc.id); st != tc.status || reason != tc.reason {
			t.Errorf("order %s: %s %s, want %s %s", tc.id, st, reason, tc.status, tc.reason)
		}
	}
	if n := e.count(`SELECT count(*) FROM orders WHERE id = ANY($1::uuid[])`, pqUUIDs(noAddress.Checkout.OrderID, invalid.Checkout.OrderID)); n != 0 {
		t.Errorf("%d orders written for checkouts that cannot be", n)
	}
	o, err := e.db.StoredOrderForTest(ctx, dead.Checkout.OrderID)
	if err != nil || len(o.Lines) != 1 || o.Lines[0].Quantity != 2 || o.Subtotal != 2000 || o.DecidedAt == nil {
		t.Errorf("rejected order %+v %v, want its line priced", o, err)
	}
	evs := e.outbox()[before:]
	if len(evs) != 2 {
		t.Fatalf("%d outbox rows, want the two order.rejected events", len(evs))
	}
	for _, r := range evs {
		validateOrderEvent(t, r.Payload)
	}

	// Recorded again under another key (the message dead again after a
	// replay), and the checkout replayed to its partition: nothing changes.
	rec, err = e.db.RecordDead(ctx, &postgres.DeadLetter{SourceKey: "seq-2", Partition: 1, Subject: "orders.cmd.1", StreamSeq: 2,
		Reason: postgres.DeadMaxDeliveries, Payload: payload})
	if err != nil || len(rec.Decided.Orders) != 0 {
		t.Fatalf("second record: decided %+v, %v", rec.Decided.Orders, err)
	}
	res := e.apply(dead)
	if res.Skipped != 1 || res.Applied != 0 || len(res.Orders) != 1 || res.Orders[0].Status != order.StatusRejected {
		t.Errorf("replayed checkout: %+v, want it skipped and its rejection re-read for the cache", res)
	}
	if n := len(e.outbox()); n != before+2 {
		t.Errorf("%d more outbox rows after the second record and the replay", n-before-2)
	}
	if got := e.stock(sku); got != (ptStock{4, 1}) {
		t.Errorf("stock %+v, want only the applied order's unit taken", got)
	}
}

func pqUUIDs(ids ...uuid.UUID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return "{" + strings.Join(s, ",") + "}"
}
