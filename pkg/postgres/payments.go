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
// A valid payment (amount and currency match) of an order that is no
// longer payable (order.Order.Refusal: expired, cancelled, rejected, paid
// under another provider_ref, or confirmed with its hold ended, even before
// the expiry sweep ran) changes no order: it writes an
// order.payment_refused event (one per provider_ref) so that the shop
// refunds it, and returns ECONFLICT.
//
// It returns the order as it is now and whether this call paid it: false
// with no error when the same provider_ref paid it before (providers retry
// until they see a 2xx). Errors: ENOTFOUND (no such order), ECONFLICT (the
// order is pending, or no longer payable as above, or the provider_ref paid
// another order), EINVALID (the amount or currency does not match the
// order's grand total and currency; nothing changed), EUNAVAILABLE (the
// database is down).
func (db *DB) PayOrder(ctx context.Context, pay *order.Payment) (*order.Order, bool, error) {
	if err := pay.Validate(); err != nil {
		return nil, false, err
	}
	var (
		out     *order.Order
		paid    bool
		refused error
	)
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		o, ref, err := lockPayable(ctx, tx, pay.OrderID)
		if err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		switch {
		case o.Status == order.StatusPaid && ref == pay.ProviderRef:
			out = o
			return nil // the provider's retry: no further effect
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
		var other uuid.UUID
		err = tx.GetContext(ctx, &other, `SELECT id FROM orders WHERE provider_ref = $1`, pay.ProviderRef)
		switch {
		case err == nil:
			return order.Errorf(order.ECONFLICT, "provider_ref %q paid another order", pay.ProviderRef)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look up provider_ref: %w", err)
		}
		if why := o.Refusal(now); why != "" {
			// Committed with the event, answered as a conflict.
			refused = order.Errorf(order.ECONFLICT, "order %s is no longer payable (%s): the payment is refused", o.ID, why)
			return refusePayment(ctx, tx, o, pay, why, now)
		}
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
	if refused != nil {
		return nil, false, refused
	}
	return out, paid, nil
}

// lockPayable locks and reads order id with its payment: ENOTFOUND if there
// is none.
func lockPayable(ctx context.Context, tx *sqlx.Tx, id uuid.UUID) (*order.Order, string, error) {
	sts, err := loadOrders(ctx, tx, []uuid.UUID{id}, true)
	if err != nil {
		return nil, "", err
	}
	st := sts[id]
	if st == nil {
		return nil, "", order.Errorf(order.ENOTFOUND, "no order %s", id)
	}
	o := st.o
	var ref sql.NullString
	var paidAt sql.NullTime
	if err := tx.QueryRowxContext(ctx, `SELECT provider_ref, paid_at FROM orders WHERE id = $1`, o.ID).Scan(&ref, &paidAt); err != nil {
		return nil, "", fmt.Errorf("read payment of order %s: %w", o.ID, err)
	}
	if paidAt.Valid {
		t := paidAt.Time.UTC()
		o.PaidAt = &t
	}
	return o, ref.String, nil
}

// refusePayment writes the order.payment_refused event of pay, refused for
// why: the order itself is left as it is.
func refusePayment(ctx context.Context, tx *sqlx.Tx, o *order.Order, pay *order.Payment, why order.Refusal, now time.Time) error {
	m, err := EventMessage(order.PaymentRefusedEvent(o, pay, why, now))
	if err != nil {
		return err
	}
	return InsertOutbox(ctx, tx, []OutboxMessage{m})
}
