package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/flashsale/orderd/pkg/order"
)

// Internals of partition.go that the external tests (package postgres_test,
// which may import pgtest) reach.

// UpdateSKUsGuardedForTest is updateSKUsGuarded without the versions.
func UpdateSKUsGuardedForTest(ctx context.Context, tx sqlx.QueryerContext, ids []string, stock, sold, restocked, oldStock, oldSold []int64, now time.Time) error {
	_, err := updateSKUsGuarded(ctx, tx, ids, stock, sold, restocked, oldStock, oldSold, now)
	return err
}

// StoredOrderForTest reads an order as a batch loads it.
func (db *DB) StoredOrderForTest(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	sts, err := loadOrders(ctx, tx, []uuid.UUID{id}, false)
	if err != nil || sts[id] == nil {
		return nil, err
	}
	return sts[id].o, nil
}
