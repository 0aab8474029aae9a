package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// OutboxChannel is the LISTEN/NOTIFY channel that InsertOutbox notifies
// when its transaction commits, so that the relay wakes at once.
const OutboxChannel = "outbox"

// relayLockKey is the session advisory lock that makes one relay active
// across every worker process ("orderd outbox relay" as 8 bytes).
const relayLockKey int64 = 0x6f7264645f726c79

// OutboxMessage is one NATS message to publish once the transaction that
// wrote it commits: an event on ORDER_EVENTS or a command for a partition.
// MsgID becomes the message's Nats-Msg-Id, so that JetStream drops a copy the
// relay publishes again after a crash.
type OutboxMessage struct {
	MsgID   string `db:"msg_id"`
	Subject string `db:"subject"`
	Payload []byte `db:"payload"`
}

// OutboxRow is an outbox message waiting to be published, in id order.
type OutboxRow struct {
	ID int64 `db:"id"`
	OutboxMessage
	CreatedAt time.Time `db:"created_at"`
}

// EventMessage returns the outbox message that publishes ev on its type's
// subject with its id as Nats-Msg-Id.
func EventMessage(ev order.Event) (OutboxMessage, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return OutboxMessage{}, fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	return OutboxMessage{MsgID: ev.ID.String(), Subject: order.EventSubject(ev.Type), Payload: data}, nil
}

// CommandMessage returns the outbox message that publishes cmd, alone in an
// envelope, on its partition's subject with its id as Nats-Msg-Id.
func CommandMessage(cmd order.Command) (OutboxMessage, error) {
	data, err := order.EncodeEnvelope(cmd)
	if err != nil {
		return OutboxMessage{}, fmt.Errorf("encode command %s: %w", cmd.ID, err)
	}
	return OutboxMessage{MsgID: cmd.ID.String(), Subject: order.Subject(cmd.Partition), Payload: data}, nil
}

// InsertOutbox writes msgs to the outbox within tx, in their order (their
// ids increase in it), and notifies OutboxChannel, which PostgreSQL delivers
// when tx commits. A message whose MsgID is already waiting in the outbox is
// skipped.
func InsertOutbox(ctx context.Context, tx sqlx.ExecerContext, msgs []OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make([]string, len(msgs))
	subjects := make([]string, len(msgs))
	payloads := make([][]byte, len(msgs))
	for i, m := range msgs {
		ids[i], subjects[i], payloads[i] = m.MsgID, m.Subject, m.Payload
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO outbox (msg_id, subject, payload)
		SELECT v.msg_id, v.subject, v.payload
		FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS v(msg_id, subject, payload, n)
		ORDER BY v.n
		ON CONFLICT (msg_id) DO NOTHING`,
		pq.Array(ids), pq.Array(subjects), pq.ByteaArray(payloads))
	if err != nil {
		return fmt.Errorf("insert outbox: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, OutboxChannel); err != nil {
		return fmt.Errorf("notify outbox: %w", err)
	}
	return nil
}

// OutboxBacklog returns how many messages wait in the outbox and when the
// oldest was written (zero if none).
func (db *DB) OutboxBacklog(ctx context.Context) (int64, time.Time, error) {
	var (
		n      int64
		oldest sql.NullTime
	)
	err := db.QueryRowContext(ctx, `SELECT count(*), min(created_at) FROM outbox`).Scan(&n, &oldest)
	if err != nil {
		return 0, time.Time{}, translate(fmt.Errorf("outbox backlog: %w", err))
	}
	return n, oldest.Time, nil
}

// RelayLock is the outbox relay's exclusive right to publish: a PostgreSQL
// session advisory lock held on a dedicated connection. Every read and
// delete of the outbox goes through that connection, so a relay whose
// connection died (and with it the lock, which another relay may now hold)
// cannot touch the outbox any more. It is not safe for concurrent use.
type RelayLock struct {
	conn *sql.Conn
}

// TryRelayLock takes the relay lock if no other session holds it. It
// returns nil and no error when another relay is active.
func (db *DB) TryRelayLock(ctx context.Context) (*RelayLock, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, translate(fmt.Errorf("relay lock: %w", err))
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, relayLockKey).Scan(&ok); err != nil {
		conn.Close()
		return nil, translate(fmt.Errorf("relay lock: %w", err))
	}
	if !ok {
		conn.Close()
		return nil, nil
	}
	return &RelayLock{conn: conn}, nil
}

// Pending returns up to limit outbox rows in id order.
func (l *RelayLock) Pending(ctx context.Context, limit int) ([]OutboxRow, error) {
	rows, err := l.conn.QueryContext(ctx, `SELECT id, msg_id, subject, payload, created_at FROM outbox ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, translate(fmt.Errorf("read outbox: %w", err))
	}
	defer rows.Close()
	var out []OutboxRow
	for rows.Next() {
		var r OutboxRow
		if err := rows.Scan(&r.ID, &r.MsgID, &r.Subject, &r.Payload, &r.CreatedAt); err != nil {
			return nil, translate(fmt.Errorf("read outbox: %w", err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(fmt.Errorf("read outbox: %w", err))
	}
	return out, nil
}

// Delete removes published rows.
func (l *RelayLock) Delete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := l.conn.ExecContext(ctx, `DELETE FROM outbox WHERE id = ANY($1::bigint[])`, pq.Array(ids)); err != nil {
		return translate(fmt.Errorf("delete outbox rows: %w", err))
	}
	return nil
}

// Ping checks that the lock's connection, and so the lock, is still alive.
func (l *RelayLock) Ping(ctx context.Context) error {
	if err := l.conn.PingContext(ctx); err != nil {
		return translate(fmt.Errorf("relay lock: %w", err))
	}
	return nil
}

// Release gives the lock up and returns the connection to the pool. If the
// unlock fails the connection is discarded, which ends its session and so
// the lock.
func (l *RelayLock) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, relayLockKey)
	if err != nil {
		// Returning ErrBadConn from Raw makes database/sql close the
		// connection instead of pooling a session that may hold the lock.
		l.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	l.conn.Close()
	if err != nil {
		return fmt.Errorf("relay unlock: %w", err)
	}
	return nil
}
