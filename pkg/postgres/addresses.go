package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/batch"
	"github.com/flashsale/orderd/pkg/order"
)

// addressColumns are the columns of addresses that order.Address holds.
const addressColumns = `id, user_id, recipient, line1, line2, city, postal_code, country, phone, created_at`

// MaxAddresses is the most addresses a user keeps (deleted ones do not
// count): a form that anyone with a token can post must not grow a table
// without bound.
const MaxAddresses = 50

// CreateAddress stores a new address of userID with a fresh id. It returns
// an EINVALID error if a does not pass a.Validate or a database constraint
// refuses a value, ECONFLICT if the user already keeps MaxAddresses, and
// EUNAVAILABLE if the database is unreachable. A user's creations take
// turns (a transaction-scoped advisory lock on the user), so that
// concurrent ones cannot together pass the cap.
func (db *DB) CreateAddress(ctx context.Context, userID string, a *order.NewAddress) (*order.Address, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	var out order.Address
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('orderd.addresses:' || $1, 0))`, userID); err != nil {
			return translate(fmt.Errorf("create address: lock: %w", err))
		}
		var n int
		if err := tx.GetContext(ctx, &n, `
			SELECT count(*) FROM addresses WHERE user_id = $1 AND deleted_at IS NULL`, userID); err != nil {
			return translate(fmt.Errorf("create address: count: %w", err))
		}
		if n >= MaxAddresses {
			return order.Errorf(order.ECONFLICT, "you keep %d addresses, the most allowed: delete one first", n)
		}
		err := tx.GetContext(ctx, &out, `
			INSERT INTO addresses (id, user_id, recipient, line1, line2, city, postal_code, country, phone)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			RETURNING `+addressColumns,
			uuid.New(), userID, a.Recipient, a.Line1, a.Line2, a.City, a.PostalCode, a.Country, a.Phone)
		if err != nil {
			return translate(fmt.Errorf("create address: %w", err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Addresses lists userID's addresses that are not deleted, newest (the
// default) first.
func (db *DB) Addresses(ctx context.Context, userID string) ([]order.Address, error) {
	out := []order.Address{}
	err := db.SelectContext(ctx, &out, `
		SELECT `+addressColumns+` FROM addresses
		WHERE user_id = $1 AND deleted_at IS NULL
		ORDER BY created_at DESC, id DESC`, userID)
	if err != nil {
		return nil, translate(fmt.Errorf("list addresses: %w", err))
	}
	return out, nil
}

// AddressPage lists up to limit of userID's addresses that are not
// deleted, newest (the default) first, after cursor ("" for the first
// page). It returns the cursor of the next page, "" on the last. The
// cursor is the keyset (created_at, id) of the page's last address, in the
// same opaque form as the order list's; a cursor this service did not
// make is an EINVALID error on the field "cursor".
func (db *DB) AddressPage(ctx context.Context, userID, cursor string, limit int) ([]order.Address, string, error) {
	limit = min(max(limit, 1), 1000)
	out := []order.Address{}
	var err error
	if cursor == "" {
		err = db.SelectContext(ctx, &out, `
			SELECT `+addressColumns+` FROM addresses
			WHERE user_id = $1 AND deleted_at IS NULL
			ORDER BY created_at DESC, id DESC LIMIT $2`, userID, limit+1)
	} else {
		c, perr := order.ParseOrderCursor(cursor)
		if perr != nil {
			return nil, "", perr
		}
		err = db.SelectContext(ctx, &out, `
			SELECT `+addressColumns+` FROM addresses
			WHERE user_id = $1 AND deleted_at IS NULL AND (created_at, id) < ($2, $3)
			ORDER BY created_at DESC, id DESC LIMIT $4`, userID, c.AcceptedAt, c.ID, limit+1)
	}
	if err != nil {
		return nil, "", translate(fmt.Errorf("list addresses: %w", err))
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = order.OrderCursor{AcceptedAt: last.CreatedAt, ID: last.ID}.String()
	}
	return out, next, nil
}

// Address returns userID's address id, or an ENOTFOUND error if it does not
// exist, was deleted or is another user's: the three are indistinguishable
// to the caller.
func (db *DB) Address(ctx context.Context, userID string, id uuid.UUID) (*order.Address, error) {
	var a order.Address
	err := db.GetContext(ctx, &a, `
		SELECT `+addressColumns+` FROM addresses
		WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`, id, userID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, order.Errorf(order.ENOTFOUND, "no address %s", id)
	}
	if err != nil {
		return nil, translate(fmt.Errorf("get address %s: %w", id, err))
	}
	return &a, nil
}

// DefaultAddress returns userID's newest address that is not deleted, or
// nil (and no error) if there is none. Concurrent calls are answered
// together by one query (pkg/batch), as CheckoutFacts' are: previews of a
// busy sale read the database once per batch.
func (db *DB) DefaultAddress(ctx context.Context, userID string) (*order.Address, error) {
	if db.defaults == nil {
		as, err := db.defaultAddresses(ctx, []string{userID})
		if err != nil {
			return nil, err
		}
		return as[0], nil
	}
	return db.defaults.Do(ctx, userID)
}

func newDefaultsBatcher(db *DB) *batch.Batcher[string, *order.Address] {
	return batch.New(db.defaultAddresses, batch.Config{Max: factsBatchMax, Parallel: factsParallel})
}

// defaultAddresses returns the default address of each of users (nil for
// one with none), in one query.
func (db *DB) defaultAddresses(ctx context.Context, users []string) ([]*order.Address, error) {
	var as []order.Address
	err := db.SelectContext(ctx, &as, `
		SELECT DISTINCT ON (user_id) `+addressColumns+` FROM addresses
		WHERE user_id = ANY($1::text[]) AND deleted_at IS NULL
		ORDER BY user_id, created_at DESC, id DESC`, pq.Array(users))
	if err != nil {
		return nil, translate(fmt.Errorf("default address: %w", err))
	}
	byUser := make(map[string]*order.Address, len(as))
	for i := range as {
		byUser[as[i].UserID] = &as[i]
	}
	out := make([]*order.Address, len(users))
	for i, u := range users {
		if a := byUser[u]; a != nil {
			c := *a // each caller gets its own copy
			out[i] = &c
		}
	}
	return out, nil
}

// DeleteAddress deletes userID's address id. The row stays, marked deleted,
// so that orders shipping to it keep their reference; it no longer appears
// in Addresses, Address or DefaultAddress. It returns an ENOTFOUND error if
// the address does not exist, is already deleted or is another user's.
func (db *DB) DeleteAddress(ctx context.Context, userID string, id uuid.UUID) error {
	res, err := db.ExecContext(ctx, `
		UPDATE addresses SET deleted_at = clock_timestamp()
		WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`, id, userID)
	if err != nil {
		return translate(fmt.Errorf("delete address %s: %w", id, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return translate(fmt.Errorf("delete address %s: %w", id, err))
	}
	if n == 0 {
		return order.Errorf(order.ENOTFOUND, "no address %s", id)
	}
	return nil
}
