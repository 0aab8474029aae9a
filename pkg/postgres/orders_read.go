package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// orderColumns are the columns of orders that orderRow holds.
const orderColumns = `id, order_number, user_id, address_id, payment_method, status, reject_reason,
	reject_skus, currency, subtotal, shipping_fee, grand_total, accepted_at, decided_at, hold_until,
	updated_at, idempotency_key, request_hash`

// orderRow is one row of orders as the driver returns it.
type orderRow struct {
	ID             uuid.UUID      `db:"id"`
	Number         string         `db:"order_number"`
	UserID         string         `db:"user_id"`
	AddressID      uuid.UUID      `db:"address_id"`
	PaymentMethod  string         `db:"payment_method"`
	Status         string         `db:"status"`
	RejectReason   sql.NullString `db:"reject_reason"`
	RejectSKUs     pq.StringArray `db:"reject_skus"`
	Currency       sql.NullString `db:"currency"`
	Subtotal       int64          `db:"subtotal"`
	ShippingFee    int64          `db:"shipping_fee"`
	GrandTotal     int64          `db:"grand_total"`
	AcceptedAt     time.Time      `db:"accepted_at"`
	DecidedAt      *time.Time     `db:"decided_at"`
	HoldUntil      *time.Time     `db:"hold_until"`
	UpdatedAt      time.Time      `db:"updated_at"`
	IdempotencyKey sql.NullString `db:"idempotency_key"`
	RequestHash    sql.NullString `db:"request_hash"`
}

func (r *orderRow) order() *order.Order {
	o := &order.Order{
		ID:            r.ID,
		Number:        r.Number,
		UserID:        r.UserID,
		AddressID:     r.AddressID,
		PaymentMethod: order.PaymentMethod(r.PaymentMethod),
		Status:        order.Status(r.Status),
		RejectReason:  order.RejectReason(r.RejectReason.String),
		Currency:      strings.TrimSpace(r.Currency.String),
		Lines:         []order.Line{},
		Subtotal:      r.Subtotal,
		ShippingFee:   r.ShippingFee,
		GrandTotal:    r.GrandTotal,
		AcceptedAt:    r.AcceptedAt.UTC(),
		DecidedAt:     utcOrNil(r.DecidedAt),
		HoldUntil:     utcOrNil(r.HoldUntil),
		UpdatedAt:     r.UpdatedAt.UTC(),
	}
	for _, s := range r.RejectSKUs {
		if id, err := uuid.Parse(s); err == nil {
			o.RejectSKUs = append(o.RejectSKUs, id)
		}
	}
	return o
}

func utcOrNil(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// lineRow is one row of order_lines with its SKU's name.
type lineRow struct {
	OrderID uuid.UUID `db:"order_id"`
	order.Line
}

// Order returns the order id with its lines in line order, or an ENOTFOUND
// error. It returns EUNAVAILABLE if the database is unreachable.
func (db *DB) Order(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	var r orderRow
	err := db.GetContext(ctx, &r, `SELECT `+orderColumns+` FROM orders WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, order.Errorf(order.ENOTFOUND, "no order %s", id)
	}
	if err != nil {
		return nil, translate(fmt.Errorf("get order %s: %w", id, err))
	}
	o := r.order()
	if err := db.fillLines(ctx, o); err != nil {
		return nil, err
	}
	return o, nil
}

// OrdersByUser returns up to limit of userID's orders with their lines,
// newest first by (accepted_at, id) descending, starting after cursor (""
// for the first page), and the cursor of the next page ("" on the last).
// An invalid cursor is an EINVALID error on the field "cursor"; an
// unreachable database is EUNAVAILABLE. limit is clamped to 1..1000.
func (db *DB) OrdersByUser(ctx context.Context, userID, cursor string, limit int) ([]order.Order, string, error) {
	limit = min(max(limit, 1), 1000)
	var (
		rows []orderRow
		err  error
	)
	if cursor == "" {
		err = db.SelectContext(ctx, &rows, `SELECT `+orderColumns+` FROM orders
			WHERE user_id = $1
			ORDER BY accepted_at DESC, id DESC LIMIT $2`, userID, limit+1)
	} else {
		c, perr := order.ParseOrderCursor(cursor)
		if perr != nil {
			return nil, "", perr
		}
		err = db.SelectContext(ctx, &rows, `SELECT `+orderColumns+` FROM orders
			WHERE user_id = $1 AND (accepted_at, id) < ($2, $3)
			ORDER BY accepted_at DESC, id DESC LIMIT $4`, userID, c.AcceptedAt, c.ID, limit+1)
	}
	if err != nil {
		return nil, "", translate(fmt.Errorf("list orders: %w", err))
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = order.OrderCursor{AcceptedAt: rows[limit-1].AcceptedAt, ID: rows[limit-1].ID}.String()
	}
	out := make([]order.Order, len(rows))
	byID := make(map[uuid.UUID]*order.Order, len(rows))
	for i := range rows {
		out[i] = *rows[i].order()
		byID[out[i].ID] = &out[i]
	}
	if err := db.fillLinesOf(ctx, byID); err != nil {
		return nil, "", err
	}
	return out, next, nil
}

func (db *DB) fillLines(ctx context.Context, o *order.Order) error {
	return db.fillLinesOf(ctx, map[uuid.UUID]*order.Order{o.ID: o})
}

// fillLinesOf sets the lines of every order in byID, in line order, with one
// query.
func (db *DB) fillLinesOf(ctx context.Context, byID map[uuid.UUID]*order.Order) error {
	if len(byID) == 0 {
		return nil
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id.String())
	}
	var lines []lineRow
	err := db.SelectContext(ctx, &lines, `
		SELECT l.order_id, l.sku_id, s.name, l.quantity, l.unit_price, l.line_total
		FROM order_lines l JOIN skus s ON s.id = l.sku_id
		WHERE l.order_id = ANY($1::uuid[])
		ORDER BY l.order_id, l.line_no`, pq.Array(ids))
	if err != nil {
		return translate(fmt.Errorf("get order lines: %w", err))
	}
	for _, l := range lines {
		if o := byID[l.OrderID]; o != nil {
			o.Lines = append(o.Lines, l.Line)
		}
	}
	return nil
}
