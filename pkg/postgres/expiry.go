package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/flashsale/orderd/pkg/order"
)

// kindExpire names an expiry in processed_commands. An expiry is not a
// command on the wire: its id, derived from the order, records that the
// order expired once.
const kindExpire order.Kind = "expire"

// ExpireDue expires up to limit orders whose home is partition p and that
// are still confirmed when their hold has passed, oldest hold first, in one
// transaction of the partition: each becomes expired (with its
// order.expired event in the outbox) and gives its stock back, that of
// this partition directly through the ledger (a guarded SKU update and a
// stock.changed event), that of other partitions by release commands
// through the outbox (the same path as a cancel). The due orders are taken
// with FOR NO KEY UPDATE SKIP LOCKED and the status guard status =
// 'confirmed': a payment that commits first wins (the order is paid and
// never expires), one that comes later sees the order expired; a second
// sweep of the same partition (two processes during a takeover, a restart)
// finds nothing to do, and the processed row of each expiry
// (uuid.NewSHA1(order, "expire")) makes two that overlap conflict rather
// than both apply. The caller caches res.Orders like a batch's.
//
// Errors: ErrBatchConflict (sweep again), EUNAVAILABLE (the database is
// down). Nothing is written on error.
func (db *DB) ExpireDue(ctx context.Context, p int, cfg PartitionConfig, limit int) (*BatchResult, error) {
	cfg = cfg.withDefaults()
	if cfg.Partitions < 1 || p < 0 || p >= cfg.Partitions {
		return nil, fmt.Errorf("expire due orders: partition %d of %d", p, cfg.Partitions)
	}
	var res *BatchResult
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		b := newPartBatch(ctx, tx, p, cfg)
		var ids []uuid.UUID
		err := tx.SelectContext(ctx, &ids, `
			SELECT id FROM orders
			WHERE home_partition = $1 AND status = 'confirmed' AND hold_until <= $2::timestamptz
			ORDER BY hold_until LIMIT $3
			FOR NO KEY UPDATE SKIP LOCKED`, p, pgTime(b.now), limit)
		if err != nil {
			return fmt.Errorf("find due orders: %w", err)
		}
		res = &BatchResult{CartRemovals: map[string][]uuid.UUID{}}
		if len(ids) == 0 {
			return nil
		}
		// Orders first (held already), then their SKUs of this partition,
		// in id order: the lock order of every batch.
		if b.orders, err = loadOrders(ctx, tx, ids, true); err != nil {
			return err
		}
		skus := map[uuid.UUID]bool{}
		b.heldSKUs(skus)
		if err := b.lockSKUs(skus); err != nil {
			return err
		}
		for _, id := range ids {
			st := b.orders[id]
			if st == nil || st.o.Status != order.StatusConfirmed || st.home != p || st.o.HoldUntil == nil || st.o.HoldUntil.After(b.now) {
				continue
			}
			if err := b.end(st, order.StatusExpired); err != nil {
				return err
			}
			b.applied = append(b.applied, order.Command{ID: uuid.NewSHA1(id, []byte(kindExpire)), Kind: kindExpire})
		}
		if err := b.write(); err != nil {
			return err
		}
		res, err = b.result()
		return err
	})
	if err != nil {
		return nil, batchError(err)
	}
	return res, nil
}
