package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/flashsale/orderd/pkg/order"
)

// MaxAuditEntries bounds the entries SKUAudit returns.
const MaxAuditEntries = 500

// lockSKU reads a SKU for an admin change, locking its row (FOR NO KEY
// UPDATE: the change waits for a partition batch that holds the SKU, and
// the next batch decides against the change).
func lockSKU(ctx context.Context, tx *sqlx.Tx, id uuid.UUID) (*order.SKU, error) {
	var s order.SKU
	err := tx.GetContext(ctx, &s, `SELECT `+skuColumns+` FROM skus WHERE id = $1 FOR NO KEY UPDATE`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, order.Errorf(order.ENOTFOUND, "no SKU %s", id)
	}
	if err != nil {
		return nil, fmt.Errorf("lock sku %s: %w", id, err)
	}
	return &s, nil
}

// audit records an admin change of a SKU within tx.
func audit(ctx context.Context, tx *sqlx.Tx, action, actor string, before, after *order.SKU) error {
	b, err := json.Marshal(before)
	if err != nil {
		return fmt.Errorf("encode sku: %w", err)
	}
	a, err := json.Marshal(after)
	if err != nil {
		return fmt.Errorf("encode sku: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sku_audit (sku_id, action, actor, before, after) VALUES ($1, $2, $3, $4, $5)`,
		before.ID, action, actor, string(b), string(a)) // text: jsonb takes no binary parameter
	if err != nil {
		return fmt.Errorf("insert sku audit: %w", err)
	}
	return nil
}

// SetSKUPaused pauses (paused true) or resumes a SKU's sale, on behalf of
// the admin actor, and returns the SKU as it is now. It is idempotent: a
// SKU already in the wanted state is returned unchanged, with no audit
// entry. While a SKU is paused its partition rejects its checkouts
// sale_paused. Errors: ENOTFOUND, EUNAVAILABLE.
func (db *DB) SetSKUPaused(ctx context.Context, id uuid.UUID, paused bool, actor string) (*order.SKU, error) {
	var out *order.SKU
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		before, err := lockSKU(ctx, tx, id)
		if err != nil {
			return err
		}
		if before.Paused == paused {
			out = before
			return nil
		}
		var after order.SKU
		err = tx.GetContext(ctx, &after, `
			UPDATE skus SET paused = $2, version = version + 1, updated_at = $3::timestamptz
			WHERE id = $1 RETURNING `+skuColumns, id, paused, pgTime(time.Now()))
		if err != nil {
			return fmt.Errorf("pause sku %s: %w", id, err)
		}
		action := order.AuditResume
		if paused {
			action = order.AuditPause
		}
		if err := audit(ctx, tx, action, actor, before, &after); err != nil {
			return err
		}
		out = &after
		return nil
	})
	if err != nil {
		return nil, translate(err)
	}
	return out, nil
}

// UpdateSKU changes a SKU on behalf of the admin actor: edit changes a
// copy of the SKU as it is (locked), the result is validated as a whole
// (order.SKU.ValidateEdit), and its name, price, per-user limit, sale
// window and payment hold are written with an audit entry of the SKU
// before and after, in one transaction. Stock, currency and the rest are
// never written: they move only by restock and orders. It returns the SKU
// as it is now. Errors: ENOTFOUND, EINVALID (from edit, or the result is
// invalid; nothing changed), EUNAVAILABLE.
func (db *DB) UpdateSKU(ctx context.Context, id uuid.UUID, actor string, edit func(*order.SKU) error) (*order.SKU, error) {
	var out *order.SKU
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		before, err := lockSKU(ctx, tx, id)
		if err != nil {
			return err
		}
		s := *before
		if err := edit(&s); err != nil {
			return err
		}
		if err := s.ValidateEdit(); err != nil {
			return err
		}
		var after order.SKU
		err = tx.GetContext(ctx, &after, `
			UPDATE skus SET name = $2, price = $3, per_user_limit = $4, sale_starts_at = $5, sale_ends_at = $6,
				payment_hold_seconds = $7, version = version + 1, updated_at = $8::timestamptz
			WHERE id = $1 RETURNING `+skuColumns,
			id, s.Name, s.Price, s.PerUserLimit, utc(s.SaleStartsAt), utc(s.SaleEndsAt), s.PaymentHoldSeconds, pgTime(time.Now()))
		if err != nil {
			return fmt.Errorf("update sku %s: %w", id, err)
		}
		if err := audit(ctx, tx, order.AuditUpdate, actor, before, &after); err != nil {
			return err
		}
		out = &after
		return nil
	})
	if err != nil {
		return nil, translate(err)
	}
	return out, nil
}

// SKUAudit returns the audit entries of a SKU, newest first, at most
// MaxAuditEntries. Errors: ENOTFOUND (no such SKU), EUNAVAILABLE.
func (db *DB) SKUAudit(ctx context.Context, id uuid.UUID) ([]order.AuditEntry, error) {
	if _, err := db.SKU(ctx, id); err != nil {
		return nil, err
	}
	entries := []order.AuditEntry{}
	err := db.SelectContext(ctx, &entries, `
		SELECT id, sku_id, action, actor, at, before, after FROM sku_audit
		WHERE sku_id = $1 ORDER BY id DESC LIMIT $2`, id, MaxAuditEntries)
	if err != nil {
		return nil, translate(fmt.Errorf("read sku audit: %w", err))
	}
	for i := range entries {
		entries[i].At = entries[i].At.UTC()
	}
	return entries, nil
}
