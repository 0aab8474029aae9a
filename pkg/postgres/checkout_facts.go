package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// CheckoutFacts answers, in one query, the two questions the ingress asks
// the database about a new checkout: is addressID one of userID's
// addresses, and which order did an earlier request with the
// Idempotency-Key key place (none when key is "")? The earlier order is
// the row that records the key, or else the row whose id derives from the
// user and the key (order.IdempotentID), so that a replay stays right even
// for a row written without its key. An unreachable database is
// EUNAVAILABLE.
func (db *DB) CheckoutFacts(ctx context.Context, userID string, addressID uuid.UUID, key string) (order.CheckoutFacts, error) {
	var (
		row struct {
			AddressOK bool           `db:"address_ok"`
			ID        uuid.NullUUID  `db:"id"`
			Number    sql.NullString `db:"order_number"`
			Hash      sql.NullString `db:"request_hash"`
		}
		prior uuid.UUID
	)
	if key != "" {
		prior = order.IdempotentID(userID, key)
	}
	err := db.GetContext(ctx, &row, `
		SELECT EXISTS (SELECT 1 FROM addresses
		               WHERE id = $2 AND user_id = $1 AND deleted_at IS NULL) AS address_ok,
		       p.id, p.order_number, p.request_hash
		FROM (SELECT 1) one
		LEFT JOIN LATERAL (
			SELECT id, order_number, request_hash FROM orders
			WHERE $3 <> '' AND user_id = $1 AND (idempotency_key = $3 OR id = $4)
			ORDER BY (idempotency_key = $3) DESC NULLS LAST LIMIT 1) p ON true`,
		userID, addressID, key, prior)
	if err != nil {
		return order.CheckoutFacts{}, translate(fmt.Errorf("checkout facts: %w", err))
	}
	f := order.CheckoutFacts{AddressOK: row.AddressOK, PriorHash: row.Hash.String}
	if row.ID.Valid {
		f.Prior = &order.Order{ID: row.ID.UUID, Number: row.Number.String}
	}
	return f, nil
}
