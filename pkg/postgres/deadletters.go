package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

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

// RecordDeadLetter stores d unless a dead letter with its SourceKey exists,
// and returns the row's id and whether this call created it. A missing
// last error keeps the one recorded before (an advisory that comes after
// the worker recorded the error knows less).
func (db *DB) RecordDeadLetter(ctx context.Context, d *DeadLetter) (int64, bool, error) {
	if d.SourceKey == "" {
		return 0, false, errors.New("record dead letter: no source key")
	}
	var id int64
	err := db.QueryRowContext(ctx, `
		INSERT INTO dead_letters (source_key, partition, subject, stream_seq, reason, last_error, deliveries, payload)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (source_key) DO NOTHING
		RETURNING id`,
		d.SourceKey, d.Partition, d.Subject, int64(d.StreamSeq), d.Reason, d.LastError, d.Deliveries, d.Payload).Scan(&id)
	if err == nil {
		return id, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, false, translate(fmt.Errorf("record dead letter: %w", err))
	}
	if err := db.GetContext(ctx, &id, `SELECT id FROM dead_letters WHERE source_key = $1`, d.SourceKey); err != nil {
		return 0, false, translate(fmt.Errorf("record dead letter: %w", err))
	}
	return id, false, nil
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
