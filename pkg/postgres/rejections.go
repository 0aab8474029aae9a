package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// RecordRejections writes, in one transaction, the orders the ingress
// rejected itself (order.KindRecordRejection commands: a SKU was marked
// sold out, see pkg/redisstore's soldout.go), with their lines and their
// order.rejected event in the outbox: what a partition writes when it
// rejects an order, without touching a SKU row (a rejected order takes no
// stock). Lines are named, and priced at the ingress's quote or else the
// SKU's price, from the skus table read without a lock; lines of SKUs that
// do not exist are left out, as a partition leaves them out.
//
// It is idempotent: an order that exists already (a redelivery, or its
// checkout reached its partition first after a retry) is skipped and read
// back for the status cache, so an order has exactly one decision event.
// Two writers that meet on one order (this and a partition) conflict on
// the primary key: ErrBatchConflict, and the retry skips it. A record the
// ingress abandoned (AbandonCommand: it answered 503) is skipped too; each
// record written is marked processed, so that an abandon meeting it
// conflicts the same way.
//
// Errors: ErrBatchConflict (apply again), a *PoisonError (drop the command
// it names and apply the rest), EUNAVAILABLE (the database is down: retry
// later), EINVALID (a constraint refused a row). Nothing is written on
// error.
func (db *DB) RecordRejections(ctx context.Context, cmds []order.Command) (*BatchResult, error) {
	var res *BatchResult
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		var err error
		res, err = recordRejections(ctx, tx, cmds)
		return err
	})
	if err != nil {
		return nil, batchError(err)
	}
	return res, nil
}

func recordRejections(ctx context.Context, tx *sqlx.Tx, cmds []order.Command) (*BatchResult, error) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	res := &BatchResult{CartRemovals: map[string][]uuid.UUID{}}
	var (
		recs                              []order.Command
		cmdIDs, orderIDs, addrIDs, skuIDs []uuid.UUID
		numbers                           []string
		seen                              = map[uuid.UUID]bool{}
	)
	for _, c := range cmds {
		if c.Kind != order.KindRecordRejection || c.Rejection == nil {
			return nil, &PoisonError{CommandID: c.ID, Err: order.Errorf(order.EINVALID, "a %s command is not an ingress rejection", c.Kind)}
		}
		k := &c.Rejection.Checkout
		if seen[k.OrderID] {
			continue
		}
		seen[k.OrderID] = true
		recs = append(recs, c)
		cmdIDs = append(cmdIDs, c.ID)
		orderIDs = append(orderIDs, k.OrderID)
		addrIDs = append(addrIDs, k.AddressID)
		numbers = append(numbers, k.OrderNumber)
		for _, l := range k.Lines {
			skuIDs = append(skuIDs, l.SKUID)
		}
	}

	existing, err := existingIDs(ctx, tx, `SELECT id FROM orders WHERE id = ANY($1::uuid[])`, orderIDs)
	if err != nil {
		return nil, fmt.Errorf("read existing orders: %w", err)
	}
	abandoned, err := existingIDs(ctx, tx, `SELECT id FROM processed_commands WHERE id = ANY($1::uuid[])`, cmdIDs)
	if err != nil {
		return nil, fmt.Errorf("read processed commands: %w", err)
	}
	addrs, err := existingIDs(ctx, tx, `SELECT id FROM addresses WHERE id = ANY($1::uuid[])`, addrIDs)
	if err != nil {
		return nil, fmt.Errorf("read addresses: %w", err)
	}
	var taken []string
	if err := tx.SelectContext(ctx, &taken, `SELECT order_number FROM orders WHERE order_number = ANY($1::text[])`, pq.Array(numbers)); err != nil {
		return nil, fmt.Errorf("read order numbers: %w", err)
	}
	used := make(map[string]bool, len(taken))
	for _, n := range taken {
		used[n] = true
	}
	var rows []order.SKU
	err = tx.SelectContext(ctx, &rows, `SELECT id, name, price, currency FROM skus WHERE id = ANY($1::uuid[])`, pq.Array(uuidTexts(skuIDs)))
	if err != nil {
		return nil, fmt.Errorf("read skus: %w", err)
	}
	skus := make(map[uuid.UUID]*order.SKU, len(rows))
	for i := range rows {
		skus[rows[i].ID] = &rows[i]
	}

	var (
		sts     []*orderState
		written []order.Command
		outbox  []OutboxMessage
		redo    []uuid.UUID
	)
	for _, c := range recs {
		r := c.Rejection
		k := &r.Checkout
		switch {
		case existing[k.OrderID]:
			redo = append(redo, k.OrderID)
			continue
		case abandoned[c.ID]:
			continue
		case !addrs[k.AddressID]:
			return nil, &PoisonError{CommandID: c.ID, Err: order.Errorf(order.EINVALID, "address %s does not exist", k.AddressID)}
		case len(k.UserID) > 128:
			return nil, &PoisonError{CommandID: c.ID, Err: order.Errorf(order.EINVALID, "user id longer than 128 bytes")}
		}
		o := r.Rejected(c.At, skus)
		if used[o.Number] {
			o.Number += "-" + o.ID.String()[:8] // as a partition does
		}
		used[o.Number] = true
		written = append(written, c)
		sts = append(sts, &orderState{
			o: o, home: c.Partition, fromCart: k.FromCart, idemKey: k.IdempotencyKey, reqHash: k.RequestHash,
			isNew: true, dirty: true, insertLines: true,
		})
		m, err := EventMessage(order.OrderEvent(o, now))
		if err != nil {
			return nil, err
		}
		outbox = append(outbox, m)
		res.Outcomes = append(res.Outcomes, Outcome{OrderID: o.ID, Status: o.Status, Reason: o.RejectReason})
		res.Orders = append(res.Orders, o)
	}
	if err := insertOrders(ctx, tx, sts); err != nil {
		return nil, err
	}
	if err := insertOrderLines(ctx, tx, sts); err != nil {
		return nil, err
	}
	if err := InsertOutbox(ctx, tx, outbox); err != nil {
		return nil, err
	}
	if err := insertProcessed(ctx, tx, written, now); err != nil {
		return nil, err
	}
	res.Applied, res.Skipped, res.Outbox = len(sts), len(redo), len(outbox)
	if len(redo) > 0 {
		back, err := loadOrders(ctx, tx, redo, false)
		if err != nil {
			return nil, err
		}
		for _, id := range redo {
			if st := back[id]; st != nil && st.o.Status != order.StatusPending {
				res.Orders = append(res.Orders, st.o)
			}
		}
	}
	return res, nil
}

// insertProcessed marks cmds processed; no ON CONFLICT: an AbandonCommand
// (or another writer) that got there first fails the batch, which then
// skips them.
func insertProcessed(ctx context.Context, tx *sqlx.Tx, cmds []order.Command, now time.Time) error {
	if len(cmds) == 0 {
		return nil
	}
	ids, kinds, parts := make([]string, len(cmds)), make([]string, len(cmds)), make([]int64, len(cmds))
	for i, c := range cmds {
		ids[i], kinds[i], parts[i] = c.ID.String(), string(c.Kind), int64(c.Partition)
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO processed_commands (id, kind, partition, applied_at)
		SELECT v.id, v.kind, v.p, $4::timestamptz FROM unnest($1::uuid[], $2::text[], $3::int[]) AS v(id, kind, p)`,
		pq.Array(ids), pq.Array(kinds), pq.Array(parts), pgTime(now))
	if err != nil {
		return fmt.Errorf("insert processed commands: %w", err)
	}
	return nil
}

// existingIDs runs query with ids as $1 and returns the ids it selects.
func existingIDs(ctx context.Context, tx *sqlx.Tx, query string, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	var got []uuid.UUID
	if err := tx.SelectContext(ctx, &got, query, pq.Array(uuidTexts(ids))); err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]bool, len(got))
	for _, id := range got {
		out[id] = true
	}
	return out, nil
}
