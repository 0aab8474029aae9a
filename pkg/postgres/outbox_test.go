package postgres_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// outboxEnv writes outbox messages and relays them as the relay does.
type outboxEnv struct {
	t  *testing.T
	db *postgres.DB
}

func newOutboxEnv(t *testing.T) *outboxEnv {
	t.Helper()
	_, db := pgtest.New(t)
	return &outboxEnv{t: t, db: db}
}

// write writes the events of orders in one transaction, as a partition
// writes a batch's.
func (e *outboxEnv) write(orders ...*order.Order) {
	e.t.Helper()
	var msgs []postgres.OutboxMessage
	for _, o := range orders {
		m, err := postgres.EventMessage(order.OrderEvent(o, time.Now()))
		if err != nil {
			e.t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	tx := e.db.MustBegin()
	defer tx.Rollback()
	if err := postgres.InsertOutbox(context.Background(), tx, msgs); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		e.t.Fatal(err)
	}
}

// relay deletes the first n waiting rows (all if n < 0) as the relay does
// once JetStream acked them, and returns them.
func (e *outboxEnv) relay(n int) []postgres.OutboxRow {
	e.t.Helper()
	ctx := context.Background()
	lock, err := e.db.TryRelayLock(ctx)
	if err != nil || lock == nil {
		e.t.Fatalf("relay lock: %v", err)
	}
	defer lock.Release()
	rows, err := lock.Pending(ctx, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	if n >= 0 {
		rows = rows[:n]
	}
	if err := lock.Delete(ctx, rows); err != nil {
		e.t.Fatal(err)
	}
	return rows
}

type decisionRow struct {
	OrderID uuid.UUID `db:"order_id"`
	Seq     int64     `db:"seq"`
	Type    string    `db:"event_type"`
	Writes  int       `db:"writes"`
}

func (e *outboxEnv) decisions() map[uuid.UUID]decisionRow {
	e.t.Helper()
	var rows []decisionRow
	if err := e.db.Select(&rows, `SELECT order_id, seq, event_type, writes FROM order_decisions`); err != nil {
		e.t.Fatal(err)
	}
	out := map[uuid.UUID]decisionRow{}
	for _, r := range rows {
		out[r.OrderID] = r
	}
	return out
}

func decided(s order.Status, lines ...order.Line) *order.Order {
	now := time.Now().UTC()
	o := &order.Order{ID: uuid.New(), Status: s, Lines: lines, DecidedAt: &now}
	if s == order.StatusRejected {
		o.RejectReason = order.RejectOutOfStock
	}
	return o
}

// TestInsertOutboxCountsDecisions: every decision event written counts in
// order_decisions, numbered in the order of the writes; writing one again
// (the same event id: the outbox, JetStream and consumers all drop it as a
// copy) counts a second write, whether the first is still waiting in the
// outbox or was relayed long ago.
func TestInsertOutboxCountsDecisions(t *testing.T) {
	t.Parallel()
	e := newOutboxEnv(t)
	a, b, c := decided(order.StatusConfirmed), decided(order.StatusRejected), decided(order.StatusConfirmed)
	cancelled := *a
	cancelled.Status = order.StatusCancelled
	e.write(a, b)
	e.write(c, &cancelled) // a cancel is no decision
	got := e.decisions()
	if len(got) != 3 || got[a.ID].Writes != 1 || got[b.ID].Writes != 1 || got[c.ID].Writes != 1 {
		t.Fatalf("decisions %+v, want one write for each of 3 orders", got)
	}
	if !(got[a.ID].Seq < got[b.ID].Seq && got[b.ID].Seq < got[c.ID].Seq) {
		t.Errorf("seq %d %d %d, want increasing in the order of the writes", got[a.ID].Seq, got[b.ID].Seq, got[c.ID].Seq)
	}
	if got[a.ID].Type != "order.confirmed" || got[b.ID].Type != "order.rejected" {
		t.Errorf("types %q %q", got[a.ID].Type, got[b.ID].Type)
	}

	// Decided again while the first event waits in the outbox: one row
	// there, two writes here.
	e.write(b)
	// Relayed, then decided again: the outbox takes a new row (JetStream
	// drops it within its dedupe window, consumers beyond it).
	e.relay(-1)
	e.write(a)
	// Twice in one transaction.
	d := decided(order.StatusConfirmed)
	e.write(d, d)
	var waiting int
	if err := e.db.Get(&waiting, `SELECT count(*) FROM outbox`); err != nil {
		t.Fatal(err)
	}
	if waiting != 2 {
		t.Errorf("%d rows in the outbox, want 2 (a again, d once)", waiting)
	}
	want := map[uuid.UUID]int{a.ID: 2, b.ID: 2, c.ID: 1, d.ID: 2}
	got = e.decisions()
	for id, w := range want {
		if got[id].Writes != w {
			t.Errorf("order %s: %d writes, want %d", id, got[id].Writes, w)
		}
	}
	if got[a.ID].Seq >= got[b.ID].Seq {
		t.Errorf("a repeated write renumbered the decision: %+v", got[a.ID])
	}
}

// TestRelayDeleteCountsHoldings: deleting relayed rows adds what their
// events hold to event_holdings, once per row and only for rows deleted.
func TestRelayDeleteCountsHoldings(t *testing.T) {
	t.Parallel()
	e := newOutboxEnv(t)
	x, y := uuid.New(), uuid.New()
	line := func(sku uuid.UUID, q int64) order.Line {
		return order.Line{SKUID: sku, Quantity: q, UnitPrice: 100, LineTotal: 100 * q}
	}
	kept := decided(order.StatusConfirmed, line(x, 2), line(y, 1))
	gone := decided(order.StatusConfirmed, line(x, 3))
	expired := *gone
	expired.Status = order.StatusExpired
	pending := &order.Order{ID: uuid.New(), Status: order.StatusCancelled, Lines: []order.Line{line(x, 5)}} // never decided
	rejected := decided(order.StatusRejected, line(y, 4))
	late := decided(order.StatusConfirmed, line(y, 7))
	e.write(kept, gone, rejected)
	e.write(&expired, pending)
	e.write(late)

	holdings := func() map[uuid.UUID]int64 {
		t.Helper()
		h, err := e.db.EventHoldings(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if h := holdings(); len(h) != 0 {
		t.Errorf("before the relay: %v", h)
	}
	e.relay(5) // all but late
	if diff := cmp.Diff(map[uuid.UUID]int64{x: 2, y: 1}, holdings()); diff != "" {
		t.Errorf("after relaying 5 rows (-want +got):\n%s", diff)
	}
	// A row deleted already (another relay's, or this one's before a
	// crash) counts no more.
	ctx := context.Background()
	lock, err := e.db.TryRelayLock(ctx)
	if err != nil || lock == nil {
		t.Fatalf("relay lock: %v", err)
	}
	rows, err := lock.Pending(ctx, 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("pending %v, %v", rows, err)
	}
	stale := append([]postgres.OutboxRow{}, rows...)
	stale[0].ID-- // the row before: gone
	if err := lock.Delete(ctx, stale); err != nil {
		t.Fatal(err)
	}
	lock.Release()
	if diff := cmp.Diff(map[uuid.UUID]int64{x: 2, y: 1}, holdings()); diff != "" {
		t.Errorf("after deleting a row that was gone (-want +got):\n%s", diff)
	}
	e.relay(-1)
	if diff := cmp.Diff(map[uuid.UUID]int64{x: 2, y: 8}, holdings()); diff != "" {
		t.Errorf("after relaying all (-want +got):\n%s", diff)
	}
}

// TestEventCountsMigration: the migration that adds event_holdings starts
// it from what the events relayed before it hold: what orders hold, less
// the confirmations still waiting in the outbox, plus the cancellations
// and expiries of confirmed orders still waiting there.
func TestEventCountsMigration(t *testing.T) {
	t.Parallel()
	e := newOutboxEnv(t)
	ctx := context.Background()
	has := func() bool {
		t.Helper()
		var n int
		if err := e.db.Get(&n, `SELECT count(*) FROM pg_tables WHERE tablename = 'event_holdings'`); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	for i := 0; has(); i++ {
		if i == 5 {
			t.Fatal("event_holdings still there after 5 migrations down")
		}
		if err := postgres.Migrate(ctx, e.db.DB.DB, "down", io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	x := uuid.New()
	if _, err := e.db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock) VALUES ($1, 'Phone', 100, 'EUR', 10, 20)`, x); err != nil {
		t.Fatal(err)
	}
	addr := uuid.New()
	if _, err := e.db.Exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country) VALUES ($1, 'u', 'B', 'S 1', 'Berlin', '10115', 'DE')`, addr); err != nil {
		t.Fatal(err)
	}
	place := func(status order.Status, qty int64) *order.Order {
		t.Helper()
		o := decided(status, order.Line{SKUID: x, Quantity: qty, UnitPrice: 100, LineTotal: 100 * qty})
		_, err := e.db.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, home_partition, accepted_at)
			VALUES ($1, $2, 'u', $3, 'card', $4, 0, now())`, o.ID, o.ID.String(), addr, status)
		if err == nil {
			_, err = e.db.Exec(`INSERT INTO order_lines (order_id, line_no, sku_id, quantity, unit_price, line_total) VALUES ($1, 0, $2, $3, 100, $4)`, o.ID, x, qty, 100*qty)
		}
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	waiting := func(o *order.Order) {
		t.Helper()
		m, err := postgres.EventMessage(order.OrderEvent(o, time.Now()))
		if err == nil {
			_, err = e.db.Exec(`INSERT INTO outbox (msg_id, subject, payload) VALUES ($1, $2, $3)`, m.MsgID, m.Subject, m.Payload)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	place(order.StatusConfirmed, 2)          // its confirmation relayed
	waiting(place(order.StatusConfirmed, 3)) // its confirmation waiting
	waiting(place(order.StatusCancelled, 1)) // confirmed, relayed; its cancellation waiting
	place(order.StatusPaid, 4)               // relayed
	if err := postgres.Migrate(ctx, e.db.DB.DB, "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	h, err := e.db.EventHoldings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h[x] != 7 {
		t.Errorf("held by the relayed events %d, want 2 + 1 + 4 = 7", h[x])
	}
	e.relay(-1)
	if h, _ := e.db.EventHoldings(ctx); h[x] != 9 {
		t.Errorf("once the outbox is relayed: %d, want 9, what orders hold", h[x])
	}
}
