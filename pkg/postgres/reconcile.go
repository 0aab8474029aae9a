package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// txReadOnlySnapshot is one read-only snapshot of the whole database.
var txReadOnlySnapshot = sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}

// StockCounts returns, for every SKU, its stock counter and the quantities
// that confirmed and paid orders hold (order_lines) and that partitions
// took for orders that do not hold them (yet): reservations held for a
// multi-partition order being decided, or held or confirmed for an order
// that was rejected, cancelled or expired and whose release has not been
// applied yet. It reads in one snapshot (REPEATABLE READ), so that the
// counters and the orders agree with each other.
func (db *DB) StockCounts(ctx context.Context) ([]order.StockCount, error) {
	out := []order.StockCount{}
	tx, err := db.BeginTxx(ctx, &txReadOnlySnapshot)
	if err != nil {
		return nil, translate(fmt.Errorf("stock counts: %w", err))
	}
	defer tx.Rollback()
	err = tx.SelectContext(ctx, &out, `
		WITH held AS (
			SELECT l.sku_id, sum(l.quantity)::bigint AS qty
			FROM order_lines l JOIN orders o ON o.id = l.order_id
			WHERE o.status IN ('confirmed', 'paid')
			GROUP BY 1
		), reserved AS (
			SELECT (e->>'sku_id')::uuid AS sku_id, sum((e->>'quantity')::bigint)::bigint AS qty
			FROM reservations r JOIN orders o ON o.id = r.order_id
				CROSS JOIN LATERAL jsonb_array_elements(r.lines) e
			WHERE r.status = 'held' OR (r.status = 'confirmed' AND o.status NOT IN ('confirmed', 'paid'))
			GROUP BY 1
		)
		SELECT s.id AS sku_id, s.name, s.stock, s.initial_stock, s.restocked,
			coalesce(h.qty, 0) AS held_by_orders, coalesce(r.qty, 0) AS reserved
		FROM skus s LEFT JOIN held h ON h.sku_id = s.id LEFT JOIN reserved r ON r.sku_id = s.id
		ORDER BY s.id`)
	if err != nil {
		return nil, translate(fmt.Errorf("stock counts: %w", err))
	}
	return out, nil
}

// EventHoldings returns, per SKU, the units that the order events relayed
// to ORDER_EVENTS say orders hold (order.confirmed, less order.expired and
// the order.cancelled of confirmed orders): the counts the relay keeps in
// event_holdings as it deletes what JetStream acknowledged
// (RelayLock.Delete). It reads one row per SKU, whatever the length of the
// event history. Events still waiting in the outbox are not counted yet.
func (db *DB) EventHoldings(ctx context.Context) (map[uuid.UUID]int64, error) {
	var rows []struct {
		SKUID uuid.UUID `db:"sku_id"`
		Held  int64     `db:"held"`
	}
	if err := db.SelectContext(ctx, &rows, `SELECT sku_id, held FROM event_holdings`); err != nil {
		return nil, translate(fmt.Errorf("event holdings: %w", err))
	}
	out := make(map[uuid.UUID]int64, len(rows))
	for _, r := range rows {
		out[r.SKUID] = r.Held
	}
	return out, nil
}
