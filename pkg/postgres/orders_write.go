package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// This file holds the partition worker's reads and writes of orders, order
// lines and reservations, all within a batch's transaction and all
// multi-row: one statement per table per batch.

// Reservation statuses (the reservations.status column).
const (
	resvRequested = "requested" // a reserve command is on its way to the partition
	resvHeld      = "held"      // the partition took the stock for a pending order
	resvFailed    = "failed"    // the partition could not take it (reason says why)
	resvReleased  = "released"  // the partition gave the stock back, or never took it
	resvConfirmed = "confirmed" // the order was confirmed: the stock is the order's
)

// orderState is one order as a batch sees and changes it.
type orderState struct {
	o           *order.Order
	home        int
	fromCart    bool
	idemKey     string
	reqHash     string
	isNew       bool // not in the database yet: INSERT
	dirty       bool // changed by the batch: UPDATE (or INSERT)
	insertLines bool // o.Lines are to be written to order_lines
	resv        map[int]*resvState
}

// resvState is one reservation row: what an order asks of, or holds in, one
// partition.
type resvState struct {
	partition int
	status    string
	reason    string
	lines     []resvLine
	deadline  time.Time
	isNew     bool
	dirty     bool
}

// resvLine is one line of a reservation (reservations.lines is a JSON array
// of them): the position of the line in the order, and once held the price
// it was taken at.
type resvLine struct {
	LineNo    int       `json:"line_no"`
	SKUID     uuid.UUID `json:"sku_id"`
	Name      string    `json:"name,omitempty"`
	Quantity  int64     `json:"quantity"`
	UnitPrice int64     `json:"unit_price"`
}

func (r *resvState) requests() []order.LineRequest {
	out := make([]order.LineRequest, len(r.lines))
	for i, l := range r.lines {
		out[i] = order.LineRequest{SKUID: l.SKUID, Quantity: l.Quantity}
	}
	return out
}

func (r *resvState) orderLines() []order.Line {
	out := make([]order.Line, len(r.lines))
	for i, l := range r.lines {
		out[i] = order.Line{SKUID: l.SKUID, Name: l.Name, Quantity: l.Quantity, UnitPrice: l.UnitPrice, LineTotal: l.UnitPrice * l.Quantity}
	}
	return out
}

// sortedResv returns an order's reservations in partition order.
func (st *orderState) sortedResv() []*resvState {
	out := make([]*resvState, 0, len(st.resv))
	for _, r := range st.resv {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *resvState) int { return a.partition - b.partition })
	return out
}

// requested returns the lines the order asked for, in the order's line
// order: from its reservations for a multi-partition order, else from its
// lines.
func (st *orderState) requested() []order.LineRequest {
	if len(st.resv) == 0 {
		out := make([]order.LineRequest, len(st.o.Lines))
		for i, l := range st.o.Lines {
			out[i] = order.LineRequest{SKUID: l.SKUID, Quantity: l.Quantity}
		}
		return out
	}
	var all []resvLine
	for _, r := range st.resv {
		all = append(all, r.lines...)
	}
	slices.SortFunc(all, func(a, b resvLine) int { return a.LineNo - b.LineNo })
	out := make([]order.LineRequest, len(all))
	for i, l := range all {
		out[i] = order.LineRequest{SKUID: l.SKUID, Quantity: l.Quantity}
	}
	return out
}

// batchOrderRow is one row of orders with what the worker needs beyond the
// client's view.
type batchOrderRow struct {
	orderRow
	HomePartition int  `db:"home_partition"`
	FromCart      bool `db:"from_cart"`
}

const batchOrderColumns = orderColumns + `, home_partition, from_cart`

func (r *batchOrderRow) state() *orderState {
	return &orderState{
		o:        r.order(),
		home:     r.HomePartition,
		fromCart: r.FromCart,
		idemKey:  r.IdempotencyKey.String,
		reqHash:  r.RequestHash.String,
		resv:     make(map[int]*resvState),
	}
}

// loadOrders reads orders with their lines and reservations, locking the
// order rows in id order when lock is set (every writer of an existing
// order locks it first, and locks orders before SKUs, so batches that meet
// on an order wait for each other instead of deadlocking).
func loadOrders(ctx context.Context, tx *sqlx.Tx, ids []uuid.UUID, lock bool) (map[uuid.UUID]*orderState, error) {
	out := make(map[uuid.UUID]*orderState, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	q := `SELECT ` + batchOrderColumns + ` FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id`
	if lock {
		// NO KEY UPDATE: writers exclude each other, while the foreign key
		// checks of reservations (KEY SHARE) do not wait.
		q += ` FOR NO KEY UPDATE`
	}
	var rows []batchOrderRow
	if err := tx.SelectContext(ctx, &rows, q, pq.Array(uuidTexts(ids))); err != nil {
		return nil, fmt.Errorf("load orders: %w", err)
	}
	if len(rows) == 0 {
		return out, nil
	}
	found := make([]string, len(rows))
	for i := range rows {
		out[rows[i].ID] = rows[i].state()
		found[i] = rows[i].ID.String()
	}
	var lines []struct {
		OrderID uuid.UUID `db:"order_id"`
		order.Line
	}
	err := tx.SelectContext(ctx, &lines, `
		SELECT l.order_id, l.sku_id, s.name, l.quantity, l.unit_price, l.line_total
		FROM order_lines l JOIN skus s ON s.id = l.sku_id
		WHERE l.order_id = ANY($1::uuid[])
		ORDER BY l.order_id, l.line_no`, pq.Array(found))
	if err != nil {
		return nil, fmt.Errorf("load order lines: %w", err)
	}
	for _, l := range lines {
		st := out[l.OrderID]
		st.o.Lines = append(st.o.Lines, l.Line)
	}
	var resv []struct {
		OrderID   uuid.UUID      `db:"order_id"`
		Partition int            `db:"partition"`
		Status    string         `db:"status"`
		Reason    sql.NullString `db:"reason"`
		Lines     []byte         `db:"lines"`
		Deadline  time.Time      `db:"deadline"`
	}
	err = tx.SelectContext(ctx, &resv, `
		SELECT order_id, partition, status, reason, lines, deadline
		FROM reservations WHERE order_id = ANY($1::uuid[])`, pq.Array(found))
	if err != nil {
		return nil, fmt.Errorf("load reservations: %w", err)
	}
	for _, r := range resv {
		rs := &resvState{partition: r.Partition, status: r.Status, reason: r.Reason.String, deadline: r.Deadline.UTC()}
		if err := json.Unmarshal(r.Lines, &rs.lines); err != nil {
			return nil, fmt.Errorf("reservation of order %s in partition %d: %w", r.OrderID, r.Partition, err)
		}
		out[r.OrderID].resv[r.Partition] = rs
	}
	return out, nil
}

// insertOrders writes new orders in one statement.
func insertOrders(ctx context.Context, tx *sqlx.Tx, sts []*orderState) error {
	if len(sts) == 0 {
		return nil
	}
	n := len(sts)
	var (
		ids, nums, users, addrs, pms, stats, reasons, rejSKUs, curs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		subs, ships, grands                                         = make([]int64, n), make([]int64, n), make([]int64, n)
		homes                                                       = make([]int64, n)
		keys, hashes, accepted, decided, holds, updated             = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		carts                                                       = make([]bool, n)
	)
	for i, st := range sts {
		o := st.o
		ids[i], nums[i], users[i], addrs[i] = o.ID.String(), o.Number, o.UserID, o.AddressID.String()
		pms[i], stats[i], reasons[i], rejSKUs[i], curs[i] = string(o.PaymentMethod), string(o.Status), string(o.RejectReason), strings.Join(uuidTexts(o.RejectSKUs), ","), o.Currency
		subs[i], ships[i], grands[i], homes[i] = o.Subtotal, o.ShippingFee, o.GrandTotal, int64(st.home)
		keys[i], hashes[i] = st.idemKey, st.reqHash
		accepted[i], decided[i], holds[i], updated[i] = pgTime(o.AcceptedAt), pgTimePtr(o.DecidedAt), pgTimePtr(o.HoldUntil), pgTime(o.UpdatedAt)
		carts[i] = st.fromCart
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, reject_reason,
			reject_skus, currency, subtotal, shipping_fee, grand_total, home_partition, idempotency_key,
			request_hash, accepted_at, decided_at, hold_until, updated_at, from_cart)
		SELECT v.id, v.num, v.usr, v.addr, v.pm, v.st, NULLIF(v.reason, ''),
			CASE WHEN v.rej = '' THEN NULL ELSE string_to_array(v.rej, ',')::uuid[] END, NULLIF(v.cur, ''),
			v.sub, v.ship, v.grand, v.home, NULLIF(v.ikey, ''),
			NULLIF(v.rhash, ''), v.accepted::timestamptz, NULLIF(v.decided, '')::timestamptz,
			NULLIF(v.hold, '')::timestamptz, v.updated::timestamptz, v.cart
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[],
			$8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::int[], $14::text[],
			$15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::bool[])
			AS v(id, num, usr, addr, pm, st, reason, rej, cur, sub, ship, grand, home, ikey, rhash,
				accepted, decided, hold, updated, cart)`,
		pq.Array(ids), pq.Array(nums), pq.Array(users), pq.Array(addrs), pq.Array(pms), pq.Array(stats), pq.Array(reasons),
		pq.Array(rejSKUs), pq.Array(curs), pq.Array(subs), pq.Array(ships), pq.Array(grands), pq.Array(homes), pq.Array(keys),
		pq.Array(hashes), pq.Array(accepted), pq.Array(decided), pq.Array(holds), pq.Array(updated), pq.Array(carts))
	if err != nil {
		return fmt.Errorf("insert orders: %w", err)
	}
	return nil
}

// updateOrders writes the new state of existing orders (status changes are
// rare next to new orders: one statement per order).
func updateOrders(ctx context.Context, tx *sqlx.Tx, sts []*orderState) error {
	for _, st := range sts {
		o := st.o
		_, err := tx.ExecContext(ctx, `
			UPDATE orders SET status = $2, reject_reason = NULLIF($3, ''),
				reject_skus = CASE WHEN $4 = '' THEN NULL ELSE string_to_array($4, ',')::uuid[] END,
				currency = NULLIF($5, ''), subtotal = $6, grand_total = $7,
				decided_at = NULLIF($8, '')::timestamptz, hold_until = NULLIF($9, '')::timestamptz,
				updated_at = $10::timestamptz
			WHERE id = $1`,
			o.ID, string(o.Status), string(o.RejectReason), strings.Join(uuidTexts(o.RejectSKUs), ","),
			o.Currency, o.Subtotal, o.GrandTotal, pgTimePtr(o.DecidedAt), pgTimePtr(o.HoldUntil), pgTime(o.UpdatedAt))
		if err != nil {
			return fmt.Errorf("update order %s: %w", o.ID, err)
		}
	}
	return nil
}

// insertOrderLines writes the lines of orders in one statement.
func insertOrderLines(ctx context.Context, tx *sqlx.Tx, sts []*orderState) error {
	var (
		orderIDs, skus       []string
		lineNos              []int64
		qtys, prices, totals []int64
	)
	for _, st := range sts {
		for i, l := range st.o.Lines {
			orderIDs = append(orderIDs, st.o.ID.String())
			lineNos = append(lineNos, int64(i))
			skus = append(skus, l.SKUID.String())
			qtys = append(qtys, l.Quantity)
			prices = append(prices, l.UnitPrice)
			totals = append(totals, l.LineTotal)
		}
	}
	if len(orderIDs) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO order_lines (order_id, line_no, sku_id, quantity, unit_price, line_total)
		SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::bigint[], $5::bigint[], $6::bigint[])`,
		pq.Array(orderIDs), pq.Array(lineNos), pq.Array(skus), pq.Array(qtys), pq.Array(prices), pq.Array(totals))
	if err != nil {
		return fmt.Errorf("insert order lines: %w", err)
	}
	return nil
}

// resvWrite pairs a reservation with its order for writing.
type resvWrite struct {
	orderID uuid.UUID
	r       *resvState
}

// upsertReservations inserts new reservations and updates changed ones, one
// statement each.
func upsertReservations(ctx context.Context, tx *sqlx.Tx, rs []resvWrite, now time.Time) error {
	if len(rs) == 0 {
		return nil
	}
	var (
		orderIDs, statuses, reasons, lines, deadlines []string
		parts                                         []int64
	)
	for _, w := range rs {
		data, err := json.Marshal(w.r.lines)
		if err != nil {
			return fmt.Errorf("encode reservation lines: %w", err)
		}
		orderIDs = append(orderIDs, w.orderID.String())
		parts = append(parts, int64(w.r.partition))
		statuses = append(statuses, w.r.status)
		reasons = append(reasons, w.r.reason)
		lines = append(lines, string(data))
		deadlines = append(deadlines, pgTime(w.r.deadline))
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO reservations (order_id, partition, status, reason, lines, deadline, updated_at)
		SELECT v.order_id, v.partition, v.status, NULLIF(v.reason, ''), v.lines::jsonb, v.deadline::timestamptz, $7::timestamptz
		FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[])
			AS v(order_id, partition, status, reason, lines, deadline)
		ON CONFLICT (order_id, partition) DO UPDATE SET
			status = excluded.status, reason = excluded.reason, lines = excluded.lines, updated_at = excluded.updated_at`,
		pq.Array(orderIDs), pq.Array(parts), pq.Array(statuses), pq.Array(reasons), pq.Array(lines), pq.Array(deadlines), pgTime(now))
	if err != nil {
		return fmt.Errorf("write reservations: %w", err)
	}
	return nil
}

// pgTime formats t for a text[] parameter cast to timestamptz.
func pgTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func pgTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return pgTime(*t)
}

func uuidTexts(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}
