package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/batch"
	"github.com/flashsale/orderd/pkg/order"
)

// factsQuery is one CheckoutFacts question.
type factsQuery struct {
	userID    string
	addressID uuid.UUID
	key       string
}

// CheckoutFacts answers the two questions the ingress asks the database
// about a new checkout: is addressID one of userID's addresses, and which
// order did an earlier request with the Idempotency-Key key place (none
// when key is "")? The earlier order is the row that records the key, or
// else the row whose id derives from the user and the key
// (order.IdempotentID), so that a replay stays right even for a row
// written without its key. An unreachable database is EUNAVAILABLE.
//
// Concurrent calls are answered together, by one query over arrays (group
// commit, pkg/batch): under a flash sale's load the ingress sends one query
// per batch of checkouts instead of one per checkout.
func (db *DB) CheckoutFacts(ctx context.Context, userID string, addressID uuid.UUID, key string) (order.CheckoutFacts, error) {
	q := factsQuery{userID: userID, addressID: addressID, key: key}
	if db.facts == nil {
		facts, err := db.checkoutFacts(ctx, []factsQuery{q})
		if err != nil {
			return order.CheckoutFacts{}, err
		}
		return facts[0], nil
	}
	return db.facts.Do(ctx, q)
}

// factsBatchMax bounds the checkouts one CheckoutFacts query answers, and
// factsParallel the queries in flight at once.
const (
	factsBatchMax = 256
	factsParallel = 4
)

func newFactsBatcher(db *DB) *batch.Batcher[factsQuery, order.CheckoutFacts] {
	return batch.New(db.checkoutFacts, batch.Config{Max: factsBatchMax, Parallel: factsParallel})
}

// checkoutFacts answers qs in one query.
func (db *DB) checkoutFacts(ctx context.Context, qs []factsQuery) ([]order.CheckoutFacts, error) {
	users := make([]string, len(qs))
	addrs := make([]string, len(qs))
	keys := make([]string, len(qs))
	priors := make([]string, len(qs))
	for i, q := range qs {
		users[i], addrs[i], keys[i] = q.userID, q.addressID.String(), q.key
		prior := uuid.Nil
		if q.key != "" {
			prior = order.IdempotentID(q.userID, q.key)
		}
		priors[i] = prior.String()
	}
	var rows []struct {
		I         int            `db:"i"`
		AddressOK bool           `db:"address_ok"`
		ID        uuid.NullUUID  `db:"id"`
		Number    sql.NullString `db:"order_number"`
		Hash      sql.NullString `db:"request_hash"`
	}
	err := db.SelectContext(ctx, &rows, `
		SELECT r.i,
		       EXISTS (SELECT 1 FROM addresses a
		               WHERE a.id = r.addr AND a.user_id = r.uid AND a.deleted_at IS NULL) AS address_ok,
		       p.id, p.order_number, p.request_hash
		FROM unnest($1::text[], $2::uuid[], $3::text[], $4::uuid[]) WITH ORDINALITY AS r(uid, addr, key, prior, i)
		LEFT JOIN LATERAL (
			SELECT id, order_number, request_hash FROM orders
			WHERE r.key <> '' AND user_id = r.uid AND (idempotency_key = r.key OR id = r.prior)
			ORDER BY (idempotency_key = r.key) DESC NULLS LAST LIMIT 1) p ON true
		ORDER BY r.i`,
		pq.Array(users), pq.Array(addrs), pq.Array(keys), pq.Array(priors))
	if err != nil {
		return nil, translate(fmt.Errorf("checkout facts: %w", err))
	}
	if len(rows) != len(qs) {
		return nil, fmt.Errorf("checkout facts: %d rows for %d checkouts", len(rows), len(qs))
	}
	out := make([]order.CheckoutFacts, len(qs))
	for i, r := range rows {
		f := order.CheckoutFacts{AddressOK: r.AddressOK, PriorHash: r.Hash.String}
		if r.ID.Valid {
			f.Prior = &order.Order{ID: r.ID.UUID, Number: r.Number.String}
		}
		out[i] = f
	}
	return out, nil
}

// kindAbandoned names, in processed_commands, a command that AbandonCommand
// settled: it was never applied, and no partition will apply it.
const kindAbandoned = "abandoned"

// AbandonCommand settles a command whose publish its sender could not
// confirm: JetStream did not acknowledge it in time, so it may be stored,
// now or later, and then applied. It records the command as processed
// unless a partition applied it first, and reports which happened:
// applied false means that no partition ever applies it (ApplyBatch skips
// a processed command, and a batch applying it at the same moment fails
// on the primary key and skips it when it runs again); applied true means
// that a partition already did. Settling a command twice answers false
// both times. An unreachable database is EUNAVAILABLE: then nothing is
// known.
func (db *DB) AbandonCommand(ctx context.Context, id uuid.UUID, partition int) (applied bool, err error) {
	var r struct {
		Inserted bool           `db:"inserted"`
		Kind     sql.NullString `db:"kind"`
	}
	// The statement's snapshot predates its insert: kind is the row that
	// was there (invisible if its transaction committed meanwhile, and
	// then a partition's: only partitions and this write the table).
	err = db.GetContext(ctx, &r, `
		WITH ins AS (
			INSERT INTO processed_commands (id, kind, partition) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO NOTHING RETURNING id)
		SELECT EXISTS (SELECT 1 FROM ins) AS inserted,
		       (SELECT kind FROM processed_commands WHERE id = $1) AS kind`,
		id, kindAbandoned, partition)
	if err != nil {
		return false, translate(fmt.Errorf("abandon command %s: %w", id, err))
	}
	return !r.Inserted && r.Kind.String != kindAbandoned, nil
}
