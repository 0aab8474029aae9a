package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// Dead letter reasons: why a command left the work queue unapplied.
const (
	DeadMaxDeliveries = "max_deliveries" // JetStream gave up after MaxDeliver deliveries
	DeadPoisonMessage = "poison_message" // the worker terminated the whole message
	DeadPoisonCommand = "poison_command" // the worker dropped one command of a good message
)

// DeadLetter is a command message (or one command of one) that was never
// applied: its original subject and payload, why, and whether an operator
// replayed it. The dead_letters table is the source of truth of the admin
// API; the ORDER_DLQ stream holds a copy of each for NATS tooling.
type DeadLetter struct {
	ID         int64      `db:"id"`
	SourceKey  string     `db:"source_key"` // "seq-<stream seq>" or "cmd-<command id>": one row however often it is recorded
	Partition  int        `db:"partition"`
	Subject    string     `db:"subject"`
	StreamSeq  uint64     `db:"stream_seq"` // the message's ORDER_CMDS sequence (0 if unknown)
	Reason     string     `db:"reason"`     // DeadMaxDeliveries, DeadPoisonMessage or DeadPoisonCommand
	LastError  string     `db:"last_error"`
	Deliveries int64      `db:"deliveries"`
	Payload    []byte     `db:"payload"`
	CreatedAt  time.Time  `db:"created_at"`
	ReplayedAt *time.Time `db:"replayed_at"`
}

const deadLetterCols = `id, source_key, partition, subject, stream_seq, reason, last_error, deliveries, payload, created_at, replayed_at`

// RecordDeadLetter is RecordDead for callers that cache nothing (tests,
// tools): it returns the row's id and whether this call created it.
func (db *DB) RecordDeadLetter(ctx context.Context, d *DeadLetter) (int64, bool, error) {
	r, err := db.RecordDead(ctx, d)
	if err != nil {
		return 0, false, err
	}
	return r.ID, r.Created, nil
}

// DeadRecord is what RecordDead did.
type DeadRecord struct {
	ID      int64 // the dead letter's id
	Created bool  // this call created it
	// Decided holds the orders it decided (Orders, Outcomes) for the
	// status cache and the metrics, and the events it wrote (Outbox).
	Decided *BatchResult
	// Undecided are orders of its checkouts that could not be written (no
	// such address, a row a constraint refused: a forged or corrupt
	// command): they stay undecided until an operator looks.
	Undecided []uuid.UUID
}

// RecordDead stores d unless a dead letter with its SourceKey exists, and
// in the same transaction decides the orders of its checkouts that no
// partition wrote (deadOrders), so that a buyer's order never waits on a
// dead letter: rejected processing_failed (or, for an ingress rejection
// record, rejected as the ingress decided), with lines and an
// order.rejected event, taking no stock. It returns the row's id, whether
// this call created it, and what it decided. A missing last error keeps
// the one recorded before (an advisory that comes after the worker recorded
// the error knows less).
//
// Recording again (another path, a replayed message dead again) finds the
// orders decided and changes nothing; a replay of the dead letter is
// skipped by the partition for the same reason. Errors: EUNAVAILABLE (the
// database is down); nothing is written on error. A checkout whose order
// cannot be written is left undecided (DeadRecord.Undecided), and the dead
// letter is recorded all the same.
func (db *DB) RecordDead(ctx context.Context, d *DeadLetter) (*DeadRecord, error) {
	if d.SourceKey == "" {
		return nil, errors.New("record dead letter: no source key")
	}
	var r *DeadRecord
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		r = &DeadRecord{}
		var err error
		if r.ID, r.Created, err = insertDeadLetter(ctx, tx, d); err != nil {
			return err
		}
		return deadOrders(ctx, tx, d, r)
	})
	if err != nil {
		return nil, translate(fmt.Errorf("record dead letter: %w", err))
	}
	return r, nil
}

func insertDeadLetter(ctx context.Context, tx *sqlx.Tx, d *DeadLetter) (int64, bool, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `
		INSERT INTO dead_letters (source_key, partition, subject, stream_seq, reason, last_error, deliveries, payload)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (source_key) DO NOTHING
		RETURNING id`,
		d.SourceKey, d.Partition, d.Subject, int64(d.StreamSeq), d.Reason, d.LastError, d.Deliveries, d.Payload).Scan(&id)
	if err == nil {
		return id, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, err
	}
	if err := tx.GetContext(ctx, &id, `SELECT id FROM dead_letters WHERE source_key = $1`, d.SourceKey); err != nil {
		return 0, false, err
	}
	return id, false, nil
}

// deadOrders decides, rejected, the orders of the checkouts in the dead
// letter d's payload (and of the ingress rejection records, with their
// own reason) that do not exist yet. The orders are written like a
// partition's rejections, without a SKU (a rejected order takes no stock);
// one that a constraint refuses is left out, under a savepoint, so that
// the dead letter is recorded whatever its payload holds. It fills
// r.Decided and r.Undecided.
func deadOrders(ctx context.Context, tx *sqlx.Tx, d *DeadLetter, r *DeadRecord) error {
	res := &BatchResult{CartRemovals: map[string][]uuid.UUID{}}
	r.Decided = res
	recs := deadRejections(d)
	if len(recs) == 0 {
		return nil
	}
	var orderIDs, addrIDs, skuIDs []uuid.UUID
	var numbers []string
	for _, rec := range recs {
		k := &rec.Checkout
		orderIDs, addrIDs, numbers = append(orderIDs, k.OrderID), append(addrIDs, k.AddressID), append(numbers, k.OrderNumber)
		for _, l := range k.Lines {
			skuIDs = append(skuIDs, l.SKUID)
		}
	}
	existing, err := existingIDs(ctx, tx, `SELECT id FROM orders WHERE id = ANY($1::uuid[])`, orderIDs)
	if err != nil {
		return fmt.Errorf("read existing orders: %w", err)
	}
	addrs, err := existingIDs(ctx, tx, `SELECT id FROM addresses WHERE id = ANY($1::uuid[])`, addrIDs)
	if err != nil {
		return fmt.Errorf("read addresses: %w", err)
	}
	var taken []string
	if err := tx.SelectContext(ctx, &taken, `SELECT order_number FROM orders WHERE order_number = ANY($1::text[])`, pq.Array(numbers)); err != nil {
		return fmt.Errorf("read order numbers: %w", err)
	}
	used := make(map[string]bool, len(taken))
	for _, n := range taken {
		used[n] = true
	}
	var rows []order.SKU
	if err := tx.SelectContext(ctx, &rows, `SELECT id, name, price, currency FROM skus WHERE id = ANY($1::uuid[])`, pq.Array(uuidTexts(skuIDs))); err != nil {
		return fmt.Errorf("read skus: %w", err)
	}
	skus := make(map[uuid.UUID]*order.SKU, len(rows))
	for i := range rows {
		skus[rows[i].ID] = &rows[i]
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	for _, rec := range recs {
		k := &rec.Checkout
		switch {
		case existing[k.OrderID]:
			continue // decided already (or its saga is under way)
		case !addrs[k.AddressID] || len(k.UserID) > 128:
			r.Undecided = append(r.Undecided, k.OrderID)
			continue
		}
		if rec.DecidedAt.IsZero() {
			rec.DecidedAt = now
		}
		if rec.at.IsZero() {
			rec.at = now
		}
		o := rec.Rejected(rec.at, skus)
		if used[o.Number] {
			o.Number += "-" + o.ID.String()[:8] // as a partition does
		}
		st := &orderState{o: o, home: rec.home, fromCart: k.FromCart, idemKey: k.IdempotencyKey, reqHash: k.RequestHash, isNew: true, dirty: true, insertLines: true}
		ok, err := writeDeadOrder(ctx, tx, st, now)
		if err != nil {
			return err
		}
		if !ok {
			r.Undecided = append(r.Undecided, k.OrderID)
			continue
		}
		used[o.Number] = true
		res.Applied++
		res.Outbox++
		res.Orders = append(res.Orders, o)
		res.Outcomes = append(res.Outcomes, Outcome{OrderID: o.ID, Status: o.Status, Reason: o.RejectReason})
	}
	return nil
}

// deadRejection is the decision deadOrders writes for one order of a dead
// letter: the checkout, its reason, when it was accepted, its home.
type deadRejection struct {
	order.Rejection
	at   time.Time
	home int
}

// deadRejections returns the rejections of the checkouts and ingress
// rejection records in d's payload, one per order, read leniently: a dead
// letter may be a command the decoder refused (sent to another partition
// than its home, say) whose buyer still waits for a decision. Only
// checkouts an ingress could have accepted (order.Checkout.ValidateShape)
// count; a payload that is no envelope holds none.
func deadRejections(d *DeadLetter) []deadRejection {
	var env order.Envelope
	if err := json.Unmarshal(d.Payload, &env); err != nil {
		return nil
	}
	var out []deadRejection
	seen := map[uuid.UUID]bool{}
	for _, c := range env.Commands {
		r := deadRejection{at: c.At, home: c.Partition}
		switch {
		case c.Kind == order.KindCheckout && c.Checkout != nil:
			r.Checkout, r.Reason = *c.Checkout, order.RejectProcessingFailed
		case c.Kind == order.KindRecordRejection && c.Rejection != nil:
			r.Rejection = *c.Rejection // the ingress's decision stands
			if r.Reason == "" {
				r.Reason = order.RejectProcessingFailed
			}
		default:
			continue
		}
		if r.Checkout.ValidateShape() != nil || seen[r.Checkout.OrderID] {
			continue // not a checkout an ingress accepted: no buyer waits for it
		}
		seen[r.Checkout.OrderID] = true
		if r.home < 0 {
			r.home = d.Partition
		}
		out = append(out, r)
	}
	return out
}

// writeDeadOrder writes a rejected order with its lines and its
// order.rejected event under a savepoint, and reports whether it was
// written: a constraint that refuses it rolls back to the savepoint.
func writeDeadOrder(ctx context.Context, tx *sqlx.Tx, st *orderState, now time.Time) (bool, error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT dead_order`); err != nil {
		return false, fmt.Errorf("savepoint: %w", err)
	}
	err := insertOrders(ctx, tx, []*orderState{st})
	if err == nil {
		err = insertOrderLines(ctx, tx, []*orderState{st})
	}
	if err == nil {
		var m OutboxMessage
		if m, err = EventMessage(order.OrderEvent(st.o, now)); err == nil {
			err = InsertOutbox(ctx, tx, []OutboxMessage{m})
		}
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `RELEASE SAVEPOINT dead_order`)
		return err == nil, err
	}
	if order.ErrorCode(translate(err)) == order.EUNAVAILABLE {
		return false, err
	}
	if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT dead_order`); rerr != nil {
		return false, fmt.Errorf("rollback to savepoint after %w: %w", err, rerr)
	}
	return false, nil
}

// DeadLetters returns up to limit dead letters, newest first, with ids
// below before (0 for the first page).
func (db *DB) DeadLetters(ctx context.Context, before int64, limit int) ([]DeadLetter, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	out := []DeadLetter{}
	err := db.SelectContext(ctx, &out, `SELECT `+deadLetterCols+` FROM dead_letters WHERE id < $1 ORDER BY id DESC LIMIT $2`, before, limit)
	if err != nil {
		return nil, translate(fmt.Errorf("list dead letters: %w", err))
	}
	return out, nil
}

// DeadLetter returns one dead letter, or ENOTFOUND.
func (db *DB) DeadLetter(ctx context.Context, id int64) (*DeadLetter, error) {
	var d DeadLetter
	if err := db.GetContext(ctx, &d, `SELECT `+deadLetterCols+` FROM dead_letters WHERE id = $1`, id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, order.Errorf(order.ENOTFOUND, "no dead letter %d", id)
		}
		return nil, translate(fmt.Errorf("read dead letter: %w", err))
	}
	return &d, nil
}

// MarkDeadLetterReplayed records that dead letter id was replayed and
// returns it; first is false if it had been already (its replayed_at is
// the first replay's). ENOTFOUND if there is no such dead letter.
func (db *DB) MarkDeadLetterReplayed(ctx context.Context, id int64) (d *DeadLetter, first bool, err error) {
	var row DeadLetter
	err = db.GetContext(ctx, &row, `UPDATE dead_letters SET replayed_at = now() WHERE id = $1 AND replayed_at IS NULL RETURNING `+deadLetterCols, id)
	if err == nil {
		return &row, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, false, translate(fmt.Errorf("mark dead letter replayed: %w", err))
	}
	d, err = db.DeadLetter(ctx, id)
	return d, false, err
}

// UnreplayedDeadLetters counts the dead letters nobody replayed yet.
func (db *DB) UnreplayedDeadLetters(ctx context.Context) (int64, error) {
	var n int64
	if err := db.GetContext(ctx, &n, `SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL`); err != nil {
		return 0, translate(fmt.Errorf("count dead letters: %w", err))
	}
	return n, nil
}
