package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"
)

// Check names: each names the guarantee of SPEC 5 it verifies.
const (
	CheckNoLostOrders      = "no_lost_orders"                       // every 202 reached a decision before --timeout (client side)
	CheckNoOversell        = "no_oversell"                          // confirmed quantity never exceeds initial + restocked
	CheckStockNonNegative  = "stock_non_negative"                   // stock >= 0
	CheckStockConservation = "stock_conservation"                   // confirmed + paid quantity == initial + restocked - stock
	CheckUnitsSold         = "units_sold_consistent"                // units_sold == confirmed + paid quantity
	CheckAcceptedDecided   = "accepted_orders_decided"              // every accepted order is in the database and not pending
	CheckNoDuplicateOrders = "no_duplicate_orders"                  // one order per buyer (one Idempotency-Key each)
	CheckNoLeakedResv      = "no_leaked_reservations"               // no reservation still holds stock once its order is decided
	CheckNoSpuriousOOS     = "no_out_of_stock_while_stock_remained" // single-SKU runs: out_of_stock only once stock ran out (no confirmation decided after one)
	CheckFairSellout       = "fair_sellout"                         // single-SKU runs: exactly min(S, orders) confirmed
	CheckOneDecisionWrite  = "one_decision_written_per_order"       // order_decisions: no order's decision event written twice
	CheckOneDecisionEvent  = "one_decision_event_per_order"         // ORDER_EVENTS: exactly one decision per accepted order
	CheckDecisionMatches   = "decision_events_match_status"         // ORDER_EVENTS: the decision event agrees with the status seen
	CheckCompleted         = "run_completed"                        // the run was not interrupted
	CheckDatabase          = "database"                             // the database checks could run
	CheckEventStream       = "event_stream"                         // the ORDER_EVENTS checks could run
)

// Check is the outcome of one verified guarantee: passed when Failure and
// Skipped are empty.
type Check struct {
	Name    string
	Failure string // what went wrong
	Skipped string // why it was not verified
}

// Result is how the summary shows the check: "ok", "FAILED: ..." or
// "skipped: ...".
func (c Check) Result() string {
	switch {
	case c.Failure != "":
		return "FAILED: " + c.Failure
	case c.Skipped != "":
		return "skipped: " + c.Skipped
	}
	return "ok"
}

// Failed reports whether the check failed.
func (c Check) Failed() bool { return c.Failure != "" }

func pass(name string) Check { return Check{Name: name} }

func fail(name, format string, args ...any) Check {
	return Check{Name: name, Failure: fmt.Sprintf(format, args...)}
}

func skip(name, format string, args ...any) Check {
	return Check{Name: name, Skipped: fmt.Sprintf(format, args...)}
}

// failIf returns a failing check with the problems, or a passing one.
func failIf(name string, problems []string) Check {
	if len(problems) == 0 {
		return pass(name)
	}
	const show = 5
	msg := strings.Join(problems[:min(len(problems), show)], "; ")
	if len(problems) > show {
		msg += fmt.Sprintf("; and %d more", len(problems)-show)
	}
	return fail(name, "%s", msg)
}

// DBScope is what a run left in the database: what the verifier checks.
type DBScope struct {
	SKUs       []uuid.UUID // the SKUs the run created
	UserPrefix string      // every buyer's user id starts with it
	Accepted   []uuid.UUID // the order ids answered 202
	// SingleSKU is set for hot-sku and sold-out: one SKU, orders of UnitQty
	// units each, nothing restocked or released, so the fairness checks
	// apply.
	SingleSKU bool
	UnitQty   int64
}

// DBReport is what the database said.
type DBReport struct {
	Checks    []Check
	Oversold  int64 // sum over SKUs of max(0, held - (initial + restocked))
	StockLeft int64 // the SKUs' stock at the end, summed
	Held      int64 // units held by confirmed and paid orders, summed
	Orders    int   // orders of the run's buyers
	Pending   int   // of those, still pending
	Unseen    int   // orders of the run's buyers whose 202 the run never saw
	DupOrders int   // orders beyond the first of a buyer (each buyer sent one Idempotency-Key)
	Leaked    int   // reservations of the run's decided orders that still hold stock
	Open      int   // reservations of the run's decided orders still requested (a reserve command in flight)
	// RepeatedDecisions counts the run's orders whose decision event was
	// written more than once (order_decisions.writes > 1): decided again,
	// with the same outcome, which every copy of the event hides.
	RepeatedDecisions int
}

type skuRow struct {
	ID        uuid.UUID
	Stock     int64
	Initial   int64
	Restocked int64
	UnitsSold int64
	Held      int64 // quantity in confirmed and paid orders
}

// verifyDB checks the guarantees of SPEC 5 that the database shows for the
// run's SKUs and buyers. It returns an error only when the database cannot
// be queried.
func verifyDB(ctx context.Context, db *sql.DB, s DBScope) (DBReport, error) {
	var r DBReport
	skus, err := loadSKUs(ctx, db, s.SKUs)
	if err != nil {
		return r, err
	}
	like := s.UserPrefix + "%"
	err = db.QueryRowContext(ctx, `
		SELECT count(*),
		       count(*) FILTER (WHERE status = 'pending'),
		       count(*) FILTER (WHERE NOT (id = ANY($2::uuid[])))
		FROM orders WHERE user_id LIKE $1`, like, pq.Array(uuidStrings(s.Accepted))).Scan(&r.Orders, &r.Pending, &r.Unseen)
	if err != nil {
		return r, fmt.Errorf("count orders: %w", err)
	}
	pendingNote := ""
	if r.Pending > 0 {
		pendingNote = fmt.Sprintf(" (%d orders of the run are still pending)", r.Pending)
	}

	var over, negative, conservation, sold, missing []string
	found := map[uuid.UUID]bool{}
	for _, k := range skus {
		found[k.ID] = true
		r.StockLeft += k.Stock
		r.Held += k.Held
		if ex := k.Held - (k.Initial + k.Restocked); ex > 0 {
			r.Oversold += ex
			over = append(over, fmt.Sprintf("SKU %s: %d units held by orders, only %d ever in stock", k.ID, k.Held, k.Initial+k.Restocked))
		}
		if k.Stock < 0 {
			negative = append(negative, fmt.Sprintf("SKU %s: stock %d", k.ID, k.Stock))
		}
		if k.Held != k.Initial+k.Restocked-k.Stock {
			conservation = append(conservation, fmt.Sprintf("SKU %s: %d units held by confirmed and paid orders but initial %d + restocked %d - stock %d = %d%s",
				k.ID, k.Held, k.Initial, k.Restocked, k.Stock, k.Initial+k.Restocked-k.Stock, pendingNote))
		}
		if k.UnitsSold != k.Held {
			sold = append(sold, fmt.Sprintf("SKU %s: units_sold %d but confirmed and paid orders hold %d%s", k.ID, k.UnitsSold, k.Held, pendingNote))
		}
	}
	for _, id := range s.SKUs {
		if !found[id] {
			missing = append(missing, fmt.Sprintf("SKU %s is not in the database", id))
		}
	}
	r.Checks = append(r.Checks,
		failIf(CheckNoOversell, over),
		failIf(CheckStockNonNegative, negative),
		failIf(CheckStockConservation, append(missing, conservation...)),
		failIf(CheckUnitsSold, sold),
	)

	decided, err := checkAcceptedDecided(ctx, db, s.Accepted)
	if err != nil {
		return r, err
	}
	r.Checks = append(r.Checks, decided)

	var dupUsers int
	var example sql.NullString
	err = db.QueryRowContext(ctx, `
		SELECT count(*), coalesce(sum(n - 1), 0), min(user_id) FROM (
			SELECT user_id, count(*) AS n FROM orders WHERE user_id LIKE $1 GROUP BY user_id HAVING count(*) > 1
		) d`, like).Scan(&dupUsers, &r.DupOrders, &example)
	if err != nil {
		return r, fmt.Errorf("count duplicate orders: %w", err)
	}
	if dupUsers > 0 {
		r.Checks = append(r.Checks, fail(CheckNoDuplicateOrders, "%d buyers have more than one order though each sent one Idempotency-Key (for example %s)", dupUsers, example.String))
	} else {
		r.Checks = append(r.Checks, pass(CheckNoDuplicateOrders))
	}

	leaked, err := checkReservations(ctx, db, like, &r)
	if err != nil {
		return r, err
	}
	r.Checks = append(r.Checks, leaked)

	repeated, err := checkDecisionWrites(ctx, db, like, &r)
	if err != nil {
		return r, err
	}
	r.Checks = append(r.Checks, repeated)

	if s.SingleSKU && len(skus) == 1 {
		fc, err := checkFairness(ctx, db, s, skus[0], r, !decided.Failed())
		if err != nil {
			return r, err
		}
		r.Checks = append(r.Checks, fc...)
	}
	return r, nil
}

func loadSKUs(ctx context.Context, db *sql.DB, ids []uuid.UUID) ([]skuRow, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT s.id, s.stock, s.initial_stock, s.restocked, s.units_sold,
		       COALESCE((SELECT sum(l.quantity)
		                 FROM order_lines l JOIN orders o ON o.id = l.order_id
		                 WHERE l.sku_id = s.id AND o.status IN ('confirmed', 'paid')), 0)
		FROM skus s WHERE s.id = ANY($1::uuid[]) ORDER BY s.id`, pq.Array(uuidStrings(ids)))
	if err != nil {
		return nil, fmt.Errorf("read skus: %w", err)
	}
	defer rows.Close()
	var out []skuRow
	for rows.Next() {
		var k skuRow
		if err := rows.Scan(&k.ID, &k.Stock, &k.Initial, &k.Restocked, &k.UnitsSold, &k.Held); err != nil {
			return nil, fmt.Errorf("read skus: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read skus: %w", err)
	}
	return out, nil
}

// checkAcceptedDecided checks that every order answered 202 is in the
// database and no longer pending.
func checkAcceptedDecided(ctx context.Context, db *sql.DB, accepted []uuid.UUID) (Check, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, status FROM orders WHERE id = ANY($1::uuid[])`, pq.Array(uuidStrings(accepted)))
	if err != nil {
		return Check{}, fmt.Errorf("read accepted orders: %w", err)
	}
	defer rows.Close()
	status := make(map[uuid.UUID]string, len(accepted))
	for rows.Next() {
		var id uuid.UUID
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			return Check{}, fmt.Errorf("read accepted orders: %w", err)
		}
		status[id] = st
	}
	if err := rows.Err(); err != nil {
		return Check{}, fmt.Errorf("read accepted orders: %w", err)
	}
	var absent, pending []uuid.UUID
	for _, id := range accepted {
		switch st, ok := status[id]; {
		case !ok:
			absent = append(absent, id)
		case st == "pending":
			pending = append(pending, id)
		}
	}
	var problems []string
	if len(absent) > 0 {
		problems = append(problems, fmt.Sprintf("%d accepted orders are not in the database (for example %s)", len(absent), absent[0]))
	}
	if len(pending) > 0 {
		problems = append(problems, fmt.Sprintf("%d accepted orders are still pending (for example %s)", len(pending), pending[0]))
	}
	return failIf(CheckAcceptedDecided, problems), nil
}

// checkFairness checks guarantee 5 for a run on one SKU where every order
// asks for the same quantity and nothing is released: a buyer is rejected
// out_of_stock only once fewer than that quantity remain, and the stock
// goes to exactly as many orders as it can serve.
func checkFairness(ctx context.Context, db *sql.DB, s DBScope, k skuRow, r DBReport, allDecided bool) ([]Check, error) {
	q := max(s.UnitQty, 1)
	var oos, other int
	err := db.QueryRowContext(ctx, `
		SELECT count(*) FILTER (WHERE reject_reason = 'out_of_stock'),
		       count(*) FILTER (WHERE reject_reason <> 'out_of_stock')
		FROM orders WHERE user_id LIKE $1 AND status = 'rejected'`, s.UserPrefix+"%").Scan(&oos, &other)
	if err != nil {
		return nil, fmt.Errorf("count rejections: %w", err)
	}
	early, err := outOfStockBeforeConfirmation(ctx, db, s.UserPrefix, k.ID)
	if err != nil {
		return nil, err
	}
	var spurious []string
	if oos > 0 && k.Stock >= q {
		spurious = append(spurious, fmt.Sprintf("%d buyers were rejected out_of_stock but SKU %s ends with stock %d (each asked for %d)", oos, k.ID, k.Stock, q))
	}
	if early.n > 0 {
		spurious = append(spurious, fmt.Sprintf("%d buyers were rejected out_of_stock before a later confirmation of SKU %s (for example order %s, decision %d of the SKU, before the confirmation of order %s, decision %d)",
			early.n, k.ID, early.order, early.seq, early.later, early.laterSeq))
	}
	out := []Check{failIf(CheckNoSpuriousOOS, spurious)}
	if r.Pending > 0 || !allDecided {
		out = append(out, skip(CheckFairSellout, "not every accepted order is decided in the database"))
		return out, nil
	}
	supply := k.Initial + k.Restocked
	want := min(supply/q, int64(r.Orders)) * q
	switch {
	case k.Held != want:
		msg := fmt.Sprintf("%d orders of %d units for a stock of %d: want %d units confirmed, got %d", r.Orders, q, supply, want, k.Held)
		if other > 0 {
			msg += fmt.Sprintf(" (%d buyers rejected for another reason than out_of_stock)", other)
		}
		out = append(out, fail(CheckFairSellout, "%s", msg))
	case k.Stock != supply-want:
		out = append(out, fail(CheckFairSellout, "SKU %s ends with stock %d, want %d", k.ID, k.Stock, supply-want))
	default:
		out = append(out, pass(CheckFairSellout))
	}
	return out, nil
}

// earlyRejections are the out_of_stock rejections decided before a later
// confirmation of the same SKU, and an example.
type earlyRejections struct {
	n             int
	order, later  uuid.UUID
	seq, laterSeq int64
}

// outOfStockBeforeConfirmation finds the run's orders of sku rejected
// out_of_stock before the last confirmation of sku was decided, in the
// order the decisions took effect (order_decisions.seq: numbered when the
// deciding transaction wrote its events, under the SKU's lock). With
// orders of one size and no stock coming back, a rejection out_of_stock
// followed by a confirmation refused a unit that a later buyer then got:
// stock remained when that buyer was refused, even if the sale ends sold
// out.
func outOfStockBeforeConfirmation(ctx context.Context, db *sql.DB, userPrefix string, sku uuid.UUID) (earlyRejections, error) {
	var e earlyRejections
	var order, later sql.NullString
	var seq, laterSeq sql.NullInt64
	err := db.QueryRowContext(ctx, `
		WITH d AS (
			SELECT o.id, o.reject_reason, d.seq, d.event_type
			FROM orders o
			JOIN order_decisions d ON d.order_id = o.id
			WHERE o.user_id LIKE $1 AND EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id AND l.sku_id = $2)
		), last AS (
			SELECT id, seq FROM d WHERE event_type = 'order.confirmed' ORDER BY seq DESC LIMIT 1
		), early AS (
			SELECT d.id, d.seq FROM d, last
			WHERE d.event_type = 'order.rejected' AND d.reject_reason = 'out_of_stock' AND d.seq < last.seq
		)
		SELECT (SELECT count(*) FROM early),
		       (SELECT id::text FROM early ORDER BY seq LIMIT 1), (SELECT min(seq) FROM early),
		       (SELECT id::text FROM last), (SELECT seq FROM last)`, userPrefix+"%", sku).Scan(&e.n, &order, &seq, &later, &laterSeq)
	if err != nil {
		return e, fmt.Errorf("order the decisions: %w", err)
	}
	if e.n > 0 {
		e.order, e.later = uuid.MustParse(order.String), uuid.MustParse(later.String)
		e.seq, e.laterSeq = seq.Int64, laterSeq.Int64
	}
	return e, nil
}

// checkDecisionWrites checks that no order of the run had its decision
// event written more than once. A repeated decision writes the same event
// id (derived from the order and the type), which the outbox, JetStream's
// dedupe and the stream check all drop as a copy: only the count of writes
// that the outbox keeps (order_decisions) shows it.
func checkDecisionWrites(ctx context.Context, db *sql.DB, like string, r *DBReport) (Check, error) {
	var example sql.NullString
	var writes sql.NullInt64
	err := db.QueryRowContext(ctx, `
		SELECT count(*), min(d.order_id::text), max(d.writes)
		FROM order_decisions d JOIN orders o ON o.id = d.order_id
		WHERE d.writes > 1 AND o.user_id LIKE $1`, like).Scan(&r.RepeatedDecisions, &example, &writes)
	if err != nil {
		return Check{}, fmt.Errorf("count repeated decisions: %w", err)
	}
	if r.RepeatedDecisions > 0 {
		return fail(CheckOneDecisionWrite, "%d orders were decided more than once (their decision event written up to %d times; for example order %s)", r.RepeatedDecisions, writes.Int64, example.String), nil
	}
	return pass(CheckOneDecisionWrite), nil
}

func uuidStrings(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// checkReservations checks guarantee 4 for multi-partition orders: once an
// order of the run is decided, none of its reservations (the saga's
// per-partition holds) still holds stock. A held reservation, or a
// confirmed one of an order that was not confirmed, is a leak: its
// partition took the stock and nothing will give it back. A reservation
// still requested is a reserve command in flight; it is counted (Open),
// and a leak only if it is still so when the order was decided long ago
// (the partition applies it against the decided order and takes nothing).
func checkReservations(ctx context.Context, db *sql.DB, like string, r *DBReport) (Check, error) {
	var example sql.NullString
	err := db.QueryRowContext(ctx, `
		SELECT count(*) FILTER (WHERE r.status = 'held' OR (r.status = 'confirmed' AND o.status NOT IN ('confirmed', 'paid'))),
		       count(*) FILTER (WHERE r.status = 'requested'),
		       min(o.id::text) FILTER (WHERE r.status = 'held' OR (r.status = 'confirmed' AND o.status NOT IN ('confirmed', 'paid')))
		FROM reservations r JOIN orders o ON o.id = r.order_id
		WHERE o.user_id LIKE $1 AND o.status <> 'pending'`, like).Scan(&r.Leaked, &r.Open, &example)
	if err != nil {
		return Check{}, fmt.Errorf("count leaked reservations: %w", err)
	}
	if r.Leaked > 0 {
		return fail(CheckNoLeakedResv, "%d reservations of decided orders still hold stock (for example of order %s)", r.Leaked, example.String), nil
	}
	return pass(CheckNoLeakedResv), nil
}

// verifyDBSettled runs verifyDB until its checks pass or settle has passed:
// after a run under faults, the releases of rejected multi-partition orders
// and the last decisions may still be on their way through the outbox when
// the client has seen every decision. It returns the last report.
func verifyDBSettled(ctx context.Context, db *sql.DB, s DBScope, settle time.Duration) (DBReport, error) {
	deadline := time.Now().Add(settle)
	for {
		r, err := verifyDB(ctx, db, s)
		failed := false
		for _, c := range r.Checks {
			failed = failed || c.Failed()
		}
		if err != nil || !failed || time.Now().After(deadline) {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, nil
		case <-time.After(time.Second):
		}
	}
}
