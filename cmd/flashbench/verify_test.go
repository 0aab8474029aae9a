package main

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// saleDB is a database that a test fills with the state a run could leave.
type saleDB struct {
	t      *testing.T
	db     *sql.DB
	pg     *postgres.DB
	prefix string
	skus   []uuid.UUID
	ids    []uuid.UUID // orders "answered 202"
}

var orderSeq atomic.Int64

func newSaleDB(t *testing.T) *saleDB {
	t.Helper()
	_, db := pgtest.New(t)
	return &saleDB{t: t, db: db.DB.DB, pg: db, prefix: "fb-test" + fmt.Sprint(orderSeq.Add(1)) + "-"}
}

func (s *saleDB) exec(q string, args ...any) {
	s.t.Helper()
	if _, err := s.db.Exec(q, args...); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
}

// sku inserts a SKU of the run.
func (s *saleDB) sku(initial, restocked, stock, unitsSold int64) uuid.UUID {
	s.t.Helper()
	id := uuid.New()
	s.exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock, restocked, units_sold)
		VALUES ($1, 'test', 1999, 'EUR', $2, $3, $4, $5)`, id, stock, initial, restocked, unitsSold)
	s.skus = append(s.skus, id)
	return id
}

// order inserts an order of buyer user (of the run unless user has its own
// prefix) with one unit of each SKU, and counts it as answered 202. A
// decided order's decision event is written as a partition writes it
// (postgres.InsertOutbox), so that the calls' order is the decisions'.
func (s *saleDB) order(user, status, reason string, skus ...uuid.UUID) uuid.UUID {
	s.t.Helper()
	if !strings.Contains(user, "-") {
		user = s.prefix + user
	}
	addr, id := uuid.New(), uuid.New()
	s.exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		VALUES ($1, $2, 'B', 'Street 1', 'Berlin', '10115', 'DE')`, addr, user)
	var rr any
	if reason != "" {
		rr = reason
	}
	n := orderSeq.Add(1)
	s.exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, reject_reason,
			home_partition, idempotency_key, accepted_at)
		VALUES ($1, $2, $3, $4, 'card', $5, $6, 0, $7, now())`, id, fmt.Sprintf("FS-TEST-%09d", n), user, addr, status, rr, fmt.Sprint("key-", n))
	for i, sku := range skus {
		s.exec(`INSERT INTO order_lines (order_id, line_no, sku_id, quantity, unit_price, line_total)
			VALUES ($1, $2, $3, 1, 1999, 1999)`, id, i, sku)
	}
	s.ids = append(s.ids, id)
	s.decide(id, status, skus...)
	return id
}

// decide writes the decision event of order id, whose status is now
// status, and relays it (the outbox row is deleted, as the relay does once
// JetStream acked it). Pending and cancelled orders have none here.
func (s *saleDB) decide(id uuid.UUID, status string, skus ...uuid.UUID) {
	s.t.Helper()
	decision := order.Status(status)
	switch decision {
	case order.StatusPending, order.StatusCancelled:
		return
	case order.StatusPaid, order.StatusExpired:
		decision = order.StatusConfirmed
	}
	o := &order.Order{ID: id, Status: decision, Lines: []order.Line{}}
	for _, sku := range skus {
		o.Lines = append(o.Lines, order.Line{SKUID: sku, Quantity: 1, UnitPrice: 1999, LineTotal: 1999})
	}
	m, err := postgres.EventMessage(order.OrderEvent(o, time.Now()))
	if err != nil {
		s.t.Fatal(err)
	}
	ctx := context.Background()
	tx, err := s.pg.BeginTxx(ctx, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	defer tx.Rollback()
	if err := postgres.InsertOutbox(ctx, tx, []postgres.OutboxMessage{m}); err != nil {
		s.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		s.t.Fatal(err)
	}
	s.exec(`DELETE FROM outbox`)
}

func (s *saleDB) verify(single bool) DBReport {
	s.t.Helper()
	r, err := verifyDB(context.Background(), s.db, DBScope{SKUs: s.skus, UserPrefix: s.prefix, Accepted: s.ids, SingleSKU: single, UnitQty: 1})
	if err != nil {
		s.t.Fatalf("verifyDB: %v", err)
	}
	return r
}

// failedChecks returns the names of the failed checks, sorted.
func failedChecks(cs []Check) []string {
	var out []string
	for _, c := range cs {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out
}

func wantFailed(t *testing.T, r DBReport, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := failedChecks(r.Checks); !slices.Equal(got, want) {
		for _, c := range r.Checks {
			t.Logf("%s: %s", c.Name, c.Result())
		}
		t.Errorf("failed checks %v, want %v", got, want)
	}
}

func TestVerifyDBConsistentSellout(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(3, 0, 0, 3)
	for i := range 3 {
		s.order(fmt.Sprint(i), "confirmed", "", sku)
	}
	s.order("3", "rejected", "out_of_stock", sku)
	s.order("4", "rejected", "out_of_stock", sku)
	// Another run's orders, of the same SKU or not, are not this run's business.
	s.order("fb-other-1", "pending", "")
	s.order("fb-other-1", "pending", "")
	s.ids = s.ids[:5]

	r := s.verify(true)
	wantFailed(t, r)
	if len(r.Checks) != 10 {
		t.Errorf("%d checks, want 10", len(r.Checks))
	}
	if r.Orders != 5 || r.Pending != 0 || r.Unseen != 0 || r.StockLeft != 0 || r.Held != 3 || r.Oversold != 0 {
		t.Errorf("report %+v", r)
	}
}

func TestVerifyDBConsistentWithRestockAndPaid(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	a, b := s.sku(5, 2, 4, 3), s.sku(1, 0, 0, 1)
	s.order("0", "paid", "", a, b)
	s.order("1", "confirmed", "", a)
	s.order("2", "confirmed", "", a)
	s.order("3", "cancelled", "", a)
	s.order("4", "expired", "", a)
	s.order("5", "rejected", "out_of_stock", a, b)
	wantFailed(t, s.verify(false))
}

func TestVerifyDBOversold(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(2, 0, 0, 2)
	for i := range 3 {
		s.order(fmt.Sprint(i), "confirmed", "", sku)
	}
	r := s.verify(true)
	wantFailed(t, r, CheckNoOversell, CheckStockConservation, CheckUnitsSold, CheckFairSellout)
	if r.Oversold != 1 {
		t.Errorf("oversold %d, want 1", r.Oversold)
	}
}

func TestVerifyDBLeakedStock(t *testing.T) {
	// Three units left the stock but only two orders hold any: a rejected
	// or cancelled order kept what it had reserved.
	t.Parallel()
	s := newSaleDB(t)
	a, b := s.sku(10, 0, 7, 3), s.sku(10, 0, 10, 0)
	s.order("0", "confirmed", "", a, b)
	s.order("1", "confirmed", "", a)
	s.order("2", "rejected", "out_of_stock", a, b)
	wantFailed(t, s.verify(false), CheckStockConservation, CheckUnitsSold)
}

func TestVerifyDBNegativeStock(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	// The schema forbids it; a store without those guards would not.
	s.exec(`ALTER TABLE skus DROP CONSTRAINT skus_stock_check, DROP CONSTRAINT skus_check1`)
	sku := s.sku(2, 0, -1, 3)
	for i := range 3 {
		s.order(fmt.Sprint(i), "confirmed", "", sku)
	}
	wantFailed(t, s.verify(false), CheckStockNonNegative, CheckNoOversell)
}

func TestVerifyDBAcceptedNotDecided(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(5, 0, 4, 1)
	s.order("0", "confirmed", "", sku)
	s.order("1", "pending", "", sku)
	s.ids = append(s.ids, uuid.New()) // answered 202, never written
	r := s.verify(true)
	wantFailed(t, r, CheckAcceptedDecided)
	if r.Pending != 1 {
		t.Errorf("pending %d, want 1", r.Pending)
	}
	for _, c := range r.Checks {
		if c.Name == CheckFairSellout && c.Skipped == "" {
			t.Errorf("%s judged while an order is pending: %s", c.Name, c.Result())
		}
	}
}

func TestVerifyDBDuplicateOrder(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(5, 0, 3, 2)
	s.order("0", "confirmed", "", sku)
	s.order("0", "confirmed", "", sku) // the same buyer again, under another key
	r := s.verify(false)
	wantFailed(t, r, CheckNoDuplicateOrders)
	if r.DupOrders != 1 {
		t.Errorf("DupOrders %d, want 1", r.DupOrders)
	}
}

func TestVerifyDBUnseenOrder(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(5, 0, 3, 2)
	s.order("0", "confirmed", "", sku)
	s.order("1", "confirmed", "", sku)
	s.ids = s.ids[:1] // the second buyer's checkout timed out on the client
	r := s.verify(true)
	wantFailed(t, r)
	if r.Unseen != 1 {
		t.Errorf("unseen %d, want 1", r.Unseen)
	}
}

func TestVerifyDBOutOfStockWhileStockRemained(t *testing.T) {
	// The design's optimistic lock: a buyer gives up after 3 conflicts and
	// is told out_of_stock though units are left.
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(3, 0, 1, 2)
	s.order("0", "confirmed", "", sku)
	s.order("1", "confirmed", "", sku)
	s.order("2", "rejected", "out_of_stock", sku)
	wantFailed(t, s.verify(true), CheckNoSpuriousOOS, CheckFairSellout)
}

func TestVerifyDBOtherRejectionWhileStockRemained(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(3, 0, 1, 2)
	s.order("0", "confirmed", "", sku)
	s.order("1", "confirmed", "", sku)
	s.order("2", "rejected", "reservation_timeout", sku)
	wantFailed(t, s.verify(true), CheckFairSellout)
}

func TestVerifyDBMissingSKU(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	s.sku(1, 0, 1, 0)
	s.skus = append(s.skus, uuid.New())
	wantFailed(t, s.verify(false), CheckStockConservation)
}

// A multi-partition order's reservations: once the order is decided, none
// may still hold stock. A rejected order whose reservation is still held
// (its release never applied) leaked it; so did one whose reservation was
// confirmed though the order was not. A requested reservation of a decided
// order is a reserve command in flight: counted, not a leak.
func TestVerifyDBLeakedReservations(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	a := s.sku(10, 0, 9, 1)
	resv := func(order uuid.UUID, partition int, status string) {
		s.exec(`INSERT INTO reservations (order_id, partition, status, lines, deadline)
			VALUES ($1, $2, $3, '[]', now())`, order, partition, status)
	}
	ok := s.order("0", "confirmed", "", a)
	resv(ok, 0, "confirmed")
	resv(ok, 1, "confirmed")
	released := s.order("1", "rejected", "out_of_stock")
	resv(released, 0, "released")
	resv(released, 1, "failed")
	resv(released, 2, "requested")
	wantFailed(t, s.verify(false))

	leaked := s.order("2", "rejected", "reservation_timeout")
	resv(leaked, 0, "held")
	resv(leaked, 1, "confirmed")
	confirmed := s.order("3", "confirmed", "")
	resv(confirmed, 0, "held")
	r := s.verify(false)
	wantFailed(t, r, CheckNoLeakedResv)
	if r.Leaked != 3 || r.Open != 1 {
		t.Errorf("Leaked %d, Open %d; want 3 and 1", r.Leaked, r.Open)
	}
}

// A buyer told out_of_stock mid-sale while later buyers were confirmed: the
// sale still ends sold out (the units went to the later buyers), so the
// stock left at the end shows nothing. The order of the decisions does.
func TestVerifyDBOutOfStockBeforeALaterConfirmation(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(3, 0, 0, 3)
	s.order("0", "confirmed", "", sku)
	s.order("1", "rejected", "out_of_stock", sku) // one unit wrongly refused...
	s.order("2", "confirmed", "", sku)            // ...and then sold to a later buyer
	s.order("3", "paid", "", sku)
	s.order("4", "rejected", "out_of_stock", sku) // after the last unit: fair
	r := s.verify(true)
	wantFailed(t, r, CheckNoSpuriousOOS)
	for _, c := range r.Checks {
		if c.Name == CheckNoSpuriousOOS && !strings.Contains(c.Failure, "1 buyers were rejected out_of_stock before a later confirmation") {
			t.Errorf("%s: %s", c.Name, c.Result())
		}
	}
}

// A decision written twice for one order (the same event id, so the outbox,
// JetStream's dedupe and every consumer drop the copy) is caught from the
// database's count of decision writes.
func TestVerifyDBRepeatedDecision(t *testing.T) {
	t.Parallel()
	s := newSaleDB(t)
	sku := s.sku(3, 0, 1, 2)
	s.order("0", "confirmed", "", sku)
	twice := s.order("1", "confirmed", "", sku)
	s.decide(twice, "confirmed", sku) // decided again, after the first was relayed
	r := s.verify(false)
	wantFailed(t, r, CheckOneDecisionWrite)
	if r.RepeatedDecisions != 1 {
		t.Errorf("RepeatedDecisions %d, want 1", r.RepeatedDecisions)
	}
}
