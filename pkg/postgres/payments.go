package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/flashsale/orderd/pkg/order"
)

// PayOrder records the payment provider's report that an order was paid:
// the confirmed order becomes paid (paid_at and provider_ref stored) and
// its order.paid event goes to the outbox, in one transaction. Payment
// moves no stock, so it is applied here rather than through a partition;
// the order row is locked and the UPDATE guarded by status = 'confirmed', so
// it races safely with expiry and cancel: whichever commits first wins and
// the other sees the new status.
//
// It returns the order as it is now and whether this call paid it: false
// with no error when the same provider_ref paid it before (providers retry
// until they see a 2xx). Errors: ENOTFOUND (no such order), ECONFLICT (the
// order is pending, no longer payable — expired, cancelled, rejected — or
// paid under another provider_ref, or the provider_ref paid another order),
// EINVALID (the amount or currency does not match the order's grand total
// and currency; nothing changed), EUNAVAILABLE (the database is down).
func (db *DB) PayOrder(ctx context.Context, pay *order.Payment) (*order.Order, bool, error) {
	if err := pay.Validate(); err != nil {
		return nil, false, err
	}
	var (
		out  *order.Order
		paid bool
	)
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		sts, err := loadOrders(ctx, tx, []uuid.UUID{pay.OrderID}, true)
		if err != nil {
			return err
		}
		st := sts[pay.OrderID]
		if st == nil {
			return order.Errorf(order.ENOTFOUND, "no order %s", pay.OrderID)
		}
		o := st.o
		var ref sql.NullString
		var paidAt sql.NullTime
		if err := tx.QueryRowxContext(ctx, `SELECT provider_ref, paid_at FROM orders WHERE id = $1`, o.ID).Scan(&ref, &paidAt); err != nil {
			return fmt.Errorf("read payment of order %s: %w", o.ID, err)
		}
		if paidAt.Valid {
			t := paidAt.Time.UTC()
			o.PaidAt = &t
		}
		switch {
		case o.Status == order.StatusPaid && ref.String == pay.ProviderRef:
			out = o
			return nil // the provider's retry: no further effect
		case o.Status == order.StatusPaid:
			return order.Errorf(order.ECONFLICT, "order %s is paid already, under another provider_ref", o.ID)
		case o.Status == order.StatusPending:
			return order.Errorf(order.ECONFLICT, "order %s is pending: it cannot be paid before it is confirmed", o.ID)
		}
		var f order.Fields
		if pay.Amount != o.GrandTotal {
			f.Add("amount", "does not match the order's grand total")
		}
		if pay.Currency != o.Currency {
			f.Add("currency", "does not match the order's currency")
		}
		if err := f.Err("the payment does not match the order"); err != nil {
			return err
		}
		if o.Status != order.StatusConfirmed {
			return order.Errorf(order.ECONFLICT, "order %s is %s: it is no longer payable", o.ID, o.Status)
		}
		var other uuid.UUID
		err = tx.GetContext(ctx, &other, `SELECT id FROM orders WHERE provider_ref = $1`, pay.ProviderRef)
		switch {
		case err == nil:
			return order.Errorf(order.ECONFLICT, "provider_ref %q paid another order", pay.ProviderRef)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look up provider_ref: %w", err)
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if err := o.Pay(now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `
			UPDATE orders SET status = 'paid', paid_at = $2::timestamptz, provider_ref = $3, updated_at = $2::timestamptz
			WHERE id = $1 AND status = 'confirmed'`, o.ID, pgTime(now), pay.ProviderRef)
		if err != nil {
			return fmt.Errorf("pay order %s: %w", o.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return order.Errorf(order.ECONFLICT, "order %s changed while it was being paid", o.ID)
		}
		m, err := EventMessage(order.OrderEvent(o, now))
		if err != nil {
			return err
		}
		if err := InsertOutbox(ctx, tx, []OutboxMessage{m}); err != nil {
			return err
		}
		out, paid = o, true
		return nil
	})
	if err != nil {
		return nil, false, translate(err)
	}
	return out, paid, nil
}
