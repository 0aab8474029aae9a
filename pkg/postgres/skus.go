package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// skuColumns are the columns of skus that order.SKU holds.
const skuColumns = `id, name, price, currency, stock, initial_stock, restocked, units_sold,
	per_user_limit, sale_starts_at, sale_ends_at, payment_hold_seconds, paused, created_at, updated_at`

// CreateSKU stores a new SKU with a fresh id, whose initial stock is its
// stock. It returns an EINVALID error if n does not pass n.Validate or a
// database constraint refuses a value, and EUNAVAILABLE if the database is
// unreachable.
func (db *DB) CreateSKU(ctx context.Context, n *order.NewSKU) (*order.SKU, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	var s order.SKU
	err := db.GetContext(ctx, &s, `
		INSERT INTO skus (id, name, price, currency, stock, initial_stock, per_user_limit,
		                  sale_starts_at, sale_ends_at, payment_hold_seconds)
		VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)
		RETURNING `+skuColumns,
		uuid.New(), n.Name, *n.Price, n.Currency, *n.Stock, n.PerUserLimit,
		utc(n.SaleStartsAt), utc(n.SaleEndsAt), n.PaymentHoldSeconds)
	if err != nil {
		return nil, translate(fmt.Errorf("create sku: %w", err))
	}
	return &s, nil
}

// SKU returns the SKU with id, or an ENOTFOUND error.
func (db *DB) SKU(ctx context.Context, id uuid.UUID) (*order.SKU, error) {
	var s order.SKU
	err := db.GetContext(ctx, &s, `SELECT `+skuColumns+` FROM skus WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, order.Errorf(order.ENOTFOUND, "no SKU %s", id)
	}
	if err != nil {
		return nil, translate(fmt.Errorf("get sku %s: %w", id, err))
	}
	return &s, nil
}

// SKUsByID returns the SKUs among ids that exist, keyed by id; ids that name
// no SKU are absent from the map.
func (db *DB) SKUsByID(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*order.SKU, error) {
	out := make(map[uuid.UUID]*order.SKU, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	var skus []order.SKU
	if err := db.SelectContext(ctx, &skus, `SELECT `+skuColumns+` FROM skus WHERE id = ANY($1::uuid[])`, pq.Array(strs)); err != nil {
		return nil, translate(fmt.Errorf("get skus by id: %w", err))
	}
	for i := range skus {
		out[skus[i].ID] = &skus[i]
	}
	return out, nil
}

// ListSKUs returns up to limit SKUs ordered by id, starting after the id
// after (uuid.Nil for the first page): keyset pagination, stable while SKUs
// are added.
func (db *DB) ListSKUs(ctx context.Context, after uuid.UUID, limit int) ([]order.SKU, error) {
	skus := []order.SKU{}
	if limit <= 0 {
		return skus, nil
	}
	if err := db.SelectContext(ctx, &skus, `SELECT `+skuColumns+` FROM skus WHERE id > $1 ORDER BY id LIMIT $2`, after, limit); err != nil {
		return nil, translate(fmt.Errorf("list skus: %w", err))
	}
	return skus, nil
}

// utc returns t in UTC at the database's microsecond precision, truncated
// rather than rounded by the server, so that any offset the client sent (Go
// accepts up to ±23:59, PostgreSQL less) reaches the database as the same
// instant, and the stored value reads back as the year it was.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}
