package postgres

import (
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// Cancels that come before their checkout.
//
// A cancel reaches the order's home partition before the order's checkout
// when the checkout's message was held by a worker that died (it comes
// back after the ack wait) or when the checkout is replayed from a dead
// letter. Such a cancel is applied like any other, and recorded as
// processed, so its retries are skipped; what it did is remembered in
// cancel_tombstones (migrations/0005), in the same transaction. The
// checkout that arrives later for that order, of the same user, is decided
// cancelled: it takes no stock in any partition, writes its lines priced
// and its reservations released (a stray release finds nothing to give
// back), and emits order.cancelled, in the transaction that forgets the
// tombstone. A cancel therefore takes effect whenever it arrives.
//
// Two writers of one partition (a pin takeover) must not miss each other:
// one applying the cancel of an order it has not seen while the other
// writes that order's checkout. Row locks cannot order them (the order
// row does not exist yet), so a batch that remembers a cancel holds the
// partition's tombstone lock (a transaction advisory lock) exclusively,
// and looks again for the order under it; a batch with checkouts holds it
// shared (checkout batches never wait for each other) and reads the
// tombstones under it.

// tombstone is the cancel of an order the partition had not seen.
type tombstone struct {
	orderID uuid.UUID
	userID  string
}

// tombstoneLockSpace is the high half of the tombstone locks' advisory
// lock keys; the low half is the partition.
const tombstoneLockSpace = int64(0x746f6d62) << 32 // "tomb"

// unseenCancels returns the orders of cancel commands that do not exist
// (as loaded, under their row locks).
func (b *partBatch) unseenCancels(cmds []order.Command) []uuid.UUID {
	var out []uuid.UUID
	for _, c := range cmds {
		if c.Kind == order.KindCancel && b.orders[c.Cancel.OrderID] == nil && !slices.Contains(out, c.Cancel.OrderID) {
			out = append(out, c.Cancel.OrderID)
		}
	}
	return out
}

// lockTombstones takes the partition's tombstone lock: exclusive if the
// batch may remember cancels, else shared if it writes checkouts.
func (b *partBatch) lockTombstones(exclusive, checkouts bool) error {
	q := `SELECT pg_advisory_xact_lock_shared($1)`
	switch {
	case exclusive:
		q = `SELECT pg_advisory_xact_lock($1)`
	case !checkouts:
		return nil
	}
	if _, err := b.tx.ExecContext(b.ctx, q, tombstoneLockSpace|int64(b.p)); err != nil {
		return fmt.Errorf("lock tombstones: %w", err)
	}
	return nil
}

// readTombstones reads, under the tombstone lock, which orders of
// checkouts exist already and which orders of checkouts and of unseen
// cancels were cancelled before they were seen. An order of unseen that
// exists now was written by another writer after the batch loaded its
// orders: ErrBatchConflict, so that the batch is applied again with that
// order locked.
func (b *partBatch) readTombstones(checkouts, unseen []uuid.UUID) error {
	ids := append(slices.Clone(checkouts), unseen...)
	if len(ids) == 0 {
		return nil
	}
	var rows []struct {
		ID          uuid.UUID `db:"id"`
		CancelledBy *string   `db:"cancelled_by"`
	}
	err := b.tx.SelectContext(b.ctx, &rows, `
		SELECT id, NULL::text AS cancelled_by FROM orders WHERE id = ANY($1::uuid[])
		UNION ALL
		SELECT order_id, user_id FROM cancel_tombstones WHERE order_id = ANY($1::uuid[])`,
		pq.Array(uuidTexts(ids)))
	if err != nil {
		return fmt.Errorf("read existing orders and tombstones: %w", err)
	}
	for _, r := range rows {
		switch {
		case r.CancelledBy != nil:
			b.tombs[r.ID] = *r.CancelledBy
		case slices.Contains(unseen, r.ID):
			return fmt.Errorf("order %s of a cancel was written meanwhile: %w", r.ID, ErrBatchConflict)
		default:
			b.existing[r.ID] = true
		}
	}
	for id := range b.tombs {
		if b.existing[id] {
			// Decided without its partition (rejected when its checkout
			// became a dead letter, or by the ingress) after its cancel
			// came: the tombstone is moot.
			delete(b.tombs, id)
			b.spent = append(b.spent, id)
		}
	}
	return nil
}

// remember records the cancel c of an order the partition has not seen,
// for its checkout to find. The first cancel of an order is the one
// remembered.
func (b *partBatch) remember(c order.Command) {
	id, user := c.Cancel.OrderID, c.Cancel.UserID
	if _, ok := b.tombs[id]; ok {
		return
	}
	b.tombs[id] = user
	b.newTombs = append(b.newTombs, tombstone{orderID: id, userID: user})
}

// cancelledBefore reports whether the checkout k's order was cancelled by
// its user before the partition saw it. Either way its tombstone, if any,
// is spent: the order is written now.
func (b *partBatch) cancelledBefore(k *order.Checkout) bool {
	user, ok := b.tombs[k.OrderID]
	if !ok {
		return false
	}
	delete(b.tombs, k.OrderID)
	b.spent = append(b.spent, k.OrderID)
	return user == k.UserID
}

// cancelUnseen decides st, a new order whose cancel came first, cancelled:
// its lines priced, nothing taken in any partition, each partition's share
// recorded released, and its order.cancelled event.
func (b *partBatch) cancelUnseen(st *orderState, lines []order.LineRequest) error {
	b.priceRequested(st, lines)
	st.o.Status = order.StatusCancelled
	st.o.UpdatedAt = b.now
	for i, l := range lines {
		q := order.Partition(l.SKUID, b.cfg.Partitions)
		r := st.resv[q]
		if r == nil {
			r = &resvState{partition: q, status: resvReleased, deadline: b.now, isNew: true, dirty: true}
			st.resv[q] = r
		}
		rl := resvLine{LineNo: i, SKUID: l.SKUID, Quantity: l.Quantity}
		if s := b.sku(l.SKUID); s != nil {
			rl.Name, rl.UnitPrice = s.Name, s.Price
		}
		r.lines = append(r.lines, rl)
	}
	return b.emit(st)
}

// writeTombstones stores the cancels the batch remembered and forgets the
// tombstones it spent.
func (b *partBatch) writeTombstones() error {
	if len(b.newTombs) > 0 {
		ids, users := make([]string, len(b.newTombs)), make([]string, len(b.newTombs))
		for i, t := range b.newTombs {
			ids[i], users[i] = t.orderID.String(), t.userID
		}
		_, err := b.tx.ExecContext(b.ctx, `
			INSERT INTO cancel_tombstones (order_id, user_id, partition, cancelled_at)
			SELECT v.id, v.user_id, $3, $4::timestamptz FROM unnest($1::uuid[], $2::text[]) AS v(id, user_id)
			ON CONFLICT (order_id) DO NOTHING`,
			pq.Array(ids), pq.Array(users), b.p, pgTime(b.now))
		if err != nil {
			return fmt.Errorf("insert cancel tombstones: %w", err)
		}
	}
	if len(b.spent) > 0 {
		if _, err := b.tx.ExecContext(b.ctx, `DELETE FROM cancel_tombstones WHERE order_id = ANY($1::uuid[])`, pq.Array(uuidTexts(b.spent))); err != nil {
			return fmt.Errorf("delete cancel tombstones: %w", err)
		}
	}
	return nil
}
