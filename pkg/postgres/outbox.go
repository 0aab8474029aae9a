package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
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

// Subjects of the order events that decide an order, hold its stock or
// give it back.
var (
	confirmedSubject = order.EventSubject(order.EventConfirmed)
	rejectedSubject  = order.EventSubject(order.EventRejected)
	cancelledSubject = order.EventSubject(order.EventCancelled)
	expiredSubject   = order.EventSubject(order.EventExpired)
)

// InsertOutbox writes msgs to the outbox within tx, in their order (their
// ids increase in it), and notifies OutboxChannel, which PostgreSQL delivers
// when tx commits. A message whose MsgID is already waiting in the outbox is
// skipped.
//
// Every decision event among msgs (order.confirmed, order.rejected) is also
// counted in order_decisions, one row per order: the first numbers the
// decision (seq, in the order of msgs and of the transactions that took
// the lock of the SKUs first), and each further one adds to its writes. An
// order decided twice with the same outcome writes the same event id, which
// the outbox, JetStream and consumers all drop as a copy: writes > 1 is
// where a repeated decision shows.
func InsertOutbox(ctx context.Context, tx sqlx.ExecerContext, msgs []OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make([]string, len(msgs))
	subjects := make([]string, len(msgs))
	payloads := make([][]byte, len(msgs))
	var decided, types []string
	for i, m := range msgs {
		ids[i], subjects[i], payloads[i] = m.MsgID, m.Subject, m.Payload
		if id, t, ok := decisionOf(m); ok {
			decided, types = append(decided, id), append(types, string(t))
		}
	}
	// One statement: the rows, the decisions and the notification.
	_, err := tx.ExecContext(ctx, `
		WITH queued AS (
			INSERT INTO outbox (msg_id, subject, payload)
			SELECT v.msg_id, v.subject, v.payload
			FROM unnest($1::text[], $2::text[], $3::bytea[]) WITH ORDINALITY AS v(msg_id, subject, payload, n)
			ORDER BY v.n
			ON CONFLICT (msg_id) DO NOTHING
		), decided AS (
			INSERT INTO order_decisions (order_id, event_type, writes)
			SELECT d.order_id, (array_agg(d.event_type ORDER BY d.n))[1], count(*)
			FROM unnest($4::uuid[], $5::text[]) WITH ORDINALITY AS d(order_id, event_type, n)
			GROUP BY d.order_id
			ORDER BY min(d.n)
			ON CONFLICT (order_id) DO UPDATE
				SET writes = order_decisions.writes + excluded.writes, last_at = now()
		)
		SELECT pg_notify($6, '')`,
		pq.Array(ids), pq.Array(subjects), pq.ByteaArray(payloads), pq.Array(decided), pq.Array(types), OutboxChannel)
	if err != nil {
		return fmt.Errorf("insert outbox: %w", err)
	}
	return nil
}

// decisionOf returns the order that m decides and the decision, if m is a
// decision event.
func decisionOf(m OutboxMessage) (string, order.EventType, bool) {
	if m.Subject != confirmedSubject && m.Subject != rejectedSubject {
		return "", "", false
	}
	var ev struct {
		Type    order.EventType `json:"type"`
		Subject string          `json:"subject"`
	}
	if json.Unmarshal(m.Payload, &ev) != nil {
		return "", "", false
	}
	id, err := uuid.Parse(ev.Subject)
	if err != nil {
		return "", "", false
	}
	return id.String(), ev.Type, true
}

// holdingDeltas returns, per SKU, the units that the order events among
// rows add to what orders hold (order.confirmed) or take from it
// (order.expired, and order.cancelled of an order that was confirmed: only
// a decided order carries decided_at, and a rejected one is never
// cancelled), as parallel arrays of row ids, SKUs and quantities. A
// payload that does not decode is not counted: reconciliation shows it as
// drift, where a stuck relay would stop every event.
func holdingDeltas(rows []OutboxRow) (rowIDs []int64, skus []string, qty []int64) {
	for _, r := range rows {
		sign := int64(0)
		switch r.Subject {
		case confirmedSubject:
			sign = 1
		case cancelledSubject, expiredSubject:
			sign = -1
		default:
			continue
		}
		var ev struct {
			Data struct {
				DecidedAt *time.Time `json:"decided_at"`
				Lines     []struct {
					SKUID    uuid.UUID `json:"sku_id"`
					Quantity int64     `json:"quantity"`
				} `json:"lines"`
			} `json:"data"`
		}
		if json.Unmarshal(r.Payload, &ev) != nil {
			continue
		}
		if r.Subject == cancelledSubject && ev.Data.DecidedAt == nil {
			continue // cancelled while pending: it held nothing
		}
		for _, l := range ev.Data.Lines {
			rowIDs, skus, qty = append(rowIDs, r.ID), append(skus, l.SKUID.String()), append(qty, sign*l.Quantity)
		}
	}
	return rowIDs, skus, qty
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

// Delete removes rows, which JetStream acknowledged, and in the same
// statement adds what their order events hold to event_holdings (see
// holdingDeltas): a row counts exactly when it is deleted, so an event
// published again after a relay crash counts once, and reconciliation
// reads one row per SKU instead of the whole stream.
func (l *RelayLock) Delete(ctx context.Context, rows []OutboxRow) error {
	if len(rows) == 0 {
		return nil
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	rowIDs, skus, qty := holdingDeltas(rows)
	_, err := l.conn.ExecContext(ctx, `
		WITH gone AS (
			DELETE FROM outbox WHERE id = ANY($1::bigint[]) RETURNING id
		)
		INSERT INTO event_holdings (sku_id, held)
		SELECT d.sku_id, sum(d.qty)::bigint
		FROM unnest($2::bigint[], $3::uuid[], $4::bigint[]) AS d(row_id, sku_id, qty)
		JOIN gone ON gone.id = d.row_id
		GROUP BY d.sku_id
		ORDER BY d.sku_id
		ON CONFLICT (sku_id) DO UPDATE SET held = event_holdings.held + excluded.held, updated_at = now()`,
		pq.Array(ids), pq.Array(rowIDs), pq.Array(skus), pq.Array(qty))
	if err != nil {
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
