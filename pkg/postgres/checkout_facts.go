package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"time"

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
// written without its key. Without such a row, the key's claim (ClaimKey)
// tells of an earlier request whose order is not written yet. An
// unreachable database is EUNAVAILABLE.
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
		I           int            `db:"i"`
		AddressOK   bool           `db:"address_ok"`
		ID          uuid.NullUUID  `db:"id"`
		Number      sql.NullString `db:"order_number"`
		Hash        sql.NullString `db:"request_hash"`
		ClaimHash   sql.NullString `db:"claim_hash"`
		ClaimNumber sql.NullString `db:"claim_number"`
	}
	err := db.SelectContext(ctx, &rows, `
		SELECT r.i,
		       EXISTS (SELECT 1 FROM addresses a
		               WHERE a.id = r.addr AND a.user_id = r.uid AND a.deleted_at IS NULL) AS address_ok,
		       p.id, p.order_number, p.request_hash,
		       c.request_hash AS claim_hash, c.order_number AS claim_number
		FROM unnest($1::text[], $2::uuid[], $3::text[], $4::uuid[]) WITH ORDINALITY AS r(uid, addr, key, prior, i)
		LEFT JOIN LATERAL (
			SELECT id, order_number, request_hash FROM orders
			WHERE r.key <> '' AND user_id = r.uid AND (idempotency_key = r.key OR id = r.prior)
			ORDER BY (idempotency_key = r.key) DESC NULLS LAST LIMIT 1) p ON true
		LEFT JOIN checkout_claims c ON r.key <> '' AND c.order_id = r.prior
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
		switch {
		case r.ID.Valid:
			f.Prior = &order.Order{ID: r.ID.UUID, Number: r.Number.String}
		case r.ClaimHash.Valid:
			f.Claim = &order.KeyClaim{OrderID: order.IdempotentID(qs[i].userID, qs[i].key), RequestHash: r.ClaimHash.String, OrderNumber: r.ClaimNumber.String}
		}
		out[i] = f
	}
	return out, nil
}

// claimRetention is how long a key's claim is kept: long after its
// partition wrote the order (seconds, or the time a stopped partition takes
// to come back), which then answers for the key.
const claimRetention = 48 * time.Hour

// ClaimKey records c, the claim of a checkout with an Idempotency-Key whose
// command is about to be published, unless the key has a claim already:
// then it stores nothing and returns that one (an earlier request with the
// key was accepted, and the ingress raced it or Redis lost its record).
// Concurrent calls are written together, in one statement (pkg/batch),
// and claims older than claimRetention are deleted now and then. An
// unreachable database is EUNAVAILABLE.
func (db *DB) ClaimKey(ctx context.Context, c order.KeyClaim) (prior *order.KeyClaim, err error) {
	if db.claims == nil {
		got, err := db.claimKeys(ctx, []order.KeyClaim{c})
		if err != nil {
			return nil, err
		}
		return got[0], nil
	}
	return db.claims.Do(ctx, c)
}

func newClaimsBatcher(db *DB) *batch.Batcher[order.KeyClaim, *order.KeyClaim] {
	return batch.New(db.claimKeys, batch.Config{Max: factsBatchMax, Parallel: factsParallel})
}

// claimKeys writes cs in one statement and returns, for each, the claim
// that was there before (nil: this one was written). Of two claims of one
// key in cs, the first is written and is the second's prior.
func (db *DB) claimKeys(ctx context.Context, cs []order.KeyClaim) ([]*order.KeyClaim, error) {
	db.pruneClaims(ctx)
	out := make([]*order.KeyClaim, len(cs))
	first := make(map[uuid.UUID]int, len(cs))
	var ids, hashes, numbers []string
	for i, c := range cs {
		if _, dup := first[c.OrderID]; !dup {
			first[c.OrderID] = i
			ids, hashes, numbers = append(ids, c.OrderID.String()), append(hashes, c.RequestHash), append(numbers, c.OrderNumber)
		}
	}
	var rows []struct {
		ID       uuid.UUID      `db:"id"`
		Inserted bool           `db:"inserted"`
		Hash     sql.NullString `db:"request_hash"`
		Number   sql.NullString `db:"order_number"`
	}
	// The statement's snapshot predates its insert: c is the row that was
	// there, invisible only if it was committed meanwhile (read again).
	err := db.SelectContext(ctx, &rows, `
		WITH v AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, hash, num)),
		ins AS (
			INSERT INTO checkout_claims (order_id, request_hash, order_number)
			SELECT id, hash, num FROM v ON CONFLICT (order_id) DO NOTHING RETURNING order_id)
		SELECT v.id, i.order_id IS NOT NULL AS inserted, c.request_hash, c.order_number
		FROM v LEFT JOIN ins i ON i.order_id = v.id LEFT JOIN checkout_claims c ON c.order_id = v.id`,
		pq.Array(ids), pq.Array(hashes), pq.Array(numbers))
	if err != nil {
		return nil, translate(fmt.Errorf("claim idempotency keys: %w", err))
	}
	priors := make(map[uuid.UUID]*order.KeyClaim, len(rows))
	for _, r := range rows {
		switch {
		case r.Inserted:
		case r.Hash.Valid:
			priors[r.ID] = &order.KeyClaim{OrderID: r.ID, RequestHash: r.Hash.String, OrderNumber: r.Number.String}
		default:
			if priors[r.ID], err = db.keyClaim(ctx, r.ID); err != nil {
				return nil, err
			}
		}
	}
	for i, c := range cs {
		switch j := first[c.OrderID]; {
		case priors[c.OrderID] != nil:
			out[i] = priors[c.OrderID]
		case j != i:
			out[i] = &cs[j]
		}
	}
	return out, nil
}

// keyClaim reads the claim of order id.
func (db *DB) keyClaim(ctx context.Context, id uuid.UUID) (*order.KeyClaim, error) {
	c := order.KeyClaim{OrderID: id}
	err := db.QueryRowxContext(ctx, `SELECT request_hash, order_number FROM checkout_claims WHERE order_id = $1`, id).Scan(&c.RequestHash, &c.OrderNumber)
	if err != nil {
		return nil, translate(fmt.Errorf("read the claim of order %s: %w", id, err))
	}
	return &c, nil
}

// pruneClaims deletes claims older than claimRetention, at most once a
// minute per process; a failure is left for the next time.
func (db *DB) pruneClaims(ctx context.Context) {
	now := time.Now()
	last := db.claimsPruned.Load()
	if now.UnixNano()-last < int64(time.Minute) || !db.claimsPruned.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	_, _ = db.ExecContext(ctx, `DELETE FROM checkout_claims WHERE created_at < $1`, pgTime(now.Add(-claimRetention)))
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
