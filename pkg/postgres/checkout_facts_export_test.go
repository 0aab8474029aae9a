package postgres

import (
	"context"

	"github.com/flashsale/orderd/pkg/order"
)

// ClaimKeysForTest writes cs in one statement, as one batch of ClaimKey.
func (db *DB) ClaimKeysForTest(ctx context.Context, cs []order.KeyClaim) ([]*order.KeyClaim, error) {
	return db.claimKeys(ctx, cs)
}
