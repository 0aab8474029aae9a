package postgres

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/flashsale/orderd/pkg/order"
)

// InsertOrdersForTest writes new orders and their lines with the statements
// a partition's batch uses (insertOrders, insertOrderLines).
func InsertOrdersForTest(ctx context.Context, tx *sqlx.Tx, orders []*order.Order, home int) error {
	sts := make([]*orderState, len(orders))
	for i, o := range orders {
		sts[i] = &orderState{o: o, home: home, isNew: true, dirty: true, insertLines: true}
	}
	if err := insertOrders(ctx, tx, sts); err != nil {
		return err
	}
	return insertOrderLines(ctx, tx, sts)
}
