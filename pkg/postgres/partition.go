package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
)

// PartitionConfig says how a partition decides its commands.
type PartitionConfig struct {
	Partitions         int           // P: the partition of a SKU is order.Partition(sku, P)
	PaymentHold        time.Duration // hold of a confirmed order whose SKUs set none (default 15m)
	ReservationTimeout time.Duration // how long a multi-partition order waits for its reservations (default 10s)
	// Marks, if set, keeps the ingress's sold-out markers true
	// (soldout.go): Reopen before a commit that takes a SKU's stock from 0
	// up, MarkSoldOut after one that leaves it at 0.
	Marks SoldOutMarks
}

func (c PartitionConfig) withDefaults() PartitionConfig {
	if c.PaymentHold <= 0 {
		c.PaymentHold = 15 * time.Minute
	}
	if c.ReservationTimeout <= 0 {
		c.ReservationTimeout = 10 * time.Second
	}
	return c
}

// Outcome is one order status change a batch made, for metrics and logs.
type Outcome struct {
	OrderID uuid.UUID
	Status  order.Status       // pending (a multi-partition order waiting for its reservations), confirmed, rejected or cancelled
	Reason  order.RejectReason // why it was rejected
}

// BatchResult is what a committed batch did, and what the caller still has
// to do outside the transaction: cache Orders and remove CartRemovals from
// the carts (redisstore.Store.ApplyDecisions).
type BatchResult struct {
	Applied   int // commands applied by this batch
	Checkouts int // of which checkouts: how far the partition's line moved on
	Skipped   int // commands applied before (redeliveries): their orders were re-read
	Outcomes  []Outcome
	// Orders holds the current state of every order the batch decided or
	// changed, and of the orders of skipped commands, except pending ones
	// (the ingress cached those, and a partition must not overwrite a
	// decision another partition cached meanwhile).
	Orders []*order.Order
	// CartRemovals maps users to the SKUs their confirmed cart orders bought.
	CartRemovals map[string][]uuid.UUID
	Outbox       int // messages written to the outbox
	// SoldOut holds the SKUs the batch locked that it left at stock 0, at
	// the row version committed (soldout.go).
	SoldOut []order.SKUVersion
	// Held names the commands not applied because they bring a sold-out
	// SKU's stock back and its marker could not be deleted (Redis is
	// down: soldout.go); HeldErr says why. Apply them again later.
	Held    []uuid.UUID
	HeldErr *ReopenError
}

// ErrBatchConflict means another writer changed the partition's rows while
// the batch was being decided (a second worker during a pin takeover): the
// stock guard did not match, a row was inserted twice, or PostgreSQL broke a
// deadlock. Nothing was written; apply the same batch again. It is never a
// reason to reject a buyer.
var ErrBatchConflict = &order.Error{Code: order.ECONFLICT, Message: "the partition changed under the batch, apply it again"}

// PoisonError says that one command of a batch can never be applied (it
// names an address that does not exist, for example). Nothing was written:
// drop that command and apply the others.
type PoisonError struct {
	CommandID uuid.UUID
	Err       error
}

// Error implements error.
func (e *PoisonError) Error() string { return fmt.Sprintf("command %s: %v", e.CommandID, e.Err) }

// Unwrap returns the reason.
func (e *PoisonError) Unwrap() error { return e.Err }

// ApplyBatch applies commands of partition p in one transaction, in their
// order:
//
//  1. lock the existing orders that reserve, release and cancel commands
//     name (in id order), then the partition's tombstone lock (tombstones.go)
//     if the batch has checkouts or cancels of orders not seen yet, then the
//     partition's SKUs the batch touches (in id order): orders before SKUs
//     everywhere, so writers never deadlock;
//  2. skip commands already applied (processed_commands, and checkouts whose
//     order exists), and read the cancels that came before their checkouts;
//  3. load what users already hold of SKUs with a per-user limit into an
//     order.Ledger and decide every command against it;
//  4. write one guarded UPDATE of the changed SKUs (WHERE stock = the value
//     read), multi-row INSERTs of orders, lines, reservations, processed
//     commands and outbox messages (an event per order status change, a
//     stock.changed per changed SKU, reserve and release commands for other
//     partitions), and notify the relay.
//
// Errors: ErrBatchConflict (apply the batch again), a *PoisonError (drop the
// command it names and apply the rest), EUNAVAILABLE (the database is down:
// retry later), EINVALID (a constraint refused a row: apply the batch's
// messages one by one to find it). Nothing is written on error. When Redis
// cannot delete the sold-out markers of SKUs whose stock the batch brings
// back from 0, the batch is applied without the commands that bring it
// back, named in BatchResult.Held, to apply again later (soldout.go).
func (db *DB) ApplyBatch(ctx context.Context, p int, cmds []order.Command, cfg PartitionConfig) (*BatchResult, error) {
	cfg = cfg.withDefaults()
	if cfg.Partitions < 1 || p < 0 || p >= cfg.Partitions {
		return nil, fmt.Errorf("apply batch: partition %d of %d", p, cfg.Partitions)
	}
	var res *BatchResult
	var hold holdBack // what waits for the sold-out markers (soldout.go)
	for {
		err := db.Tx(ctx, func(tx *sqlx.Tx) error {
			b := newPartBatch(ctx, tx, p, cfg)
			b.hold = hold.skus
			var err error
			if res, err = b.run(cmds); err == nil && len(b.held) > 0 {
				res.Held, res.HeldErr = b.held, hold.err
			}
			return err
		})
		if hold.again(err, &cfg) {
			continue
		}
		if err != nil {
			return nil, batchError(err)
		}
		break
	}
	cfg.markSoldOut(ctx, res.SoldOut) // committed: mark what it sold out
	return res, nil
}

// SweepReservations rejects, with reason reservation_timeout, up to limit
// pending multi-partition orders that still wait for a reservation past its
// deadline, and sends release commands to the partitions that hold their
// stock. It touches no SKU (stock moves only in its partition), takes the
// orders with FOR NO KEY UPDATE SKIP LOCKED (any number of sweepers may
// run), and
// returns the orders it rejected.
func (db *DB) SweepReservations(ctx context.Context, cfg PartitionConfig, limit int) (*BatchResult, error) {
	cfg = cfg.withDefaults()
	var res *BatchResult
	err := db.Tx(ctx, func(tx *sqlx.Tx) error {
		b := newPartBatch(ctx, tx, -1, cfg)
		var ids []uuid.UUID
		err := tx.SelectContext(ctx, &ids, `
			SELECT o.id FROM orders o
			WHERE o.status = 'pending' AND EXISTS (
				SELECT 1 FROM reservations r
				WHERE r.order_id = o.id AND r.status = 'requested' AND r.deadline < $1::timestamptz)
			ORDER BY o.id LIMIT $2
			FOR NO KEY UPDATE OF o SKIP LOCKED`, pgTime(b.now), limit)
		if err != nil {
			return fmt.Errorf("find timed out reservations: %w", err)
		}
		res = &BatchResult{CartRemovals: map[string][]uuid.UUID{}}
		if len(ids) == 0 {
			return nil
		}
		if b.orders, err = loadOrders(ctx, tx, ids, true); err != nil {
			return err
		}
		if err := b.loadForeign(nil); err != nil {
			return err
		}
		for _, id := range ids {
			st := b.orders[id]
			if st == nil || st.o.Status != order.StatusPending {
				continue
			}
			var late []uuid.UUID
			for _, r := range st.sortedResv() {
				if r.status == resvRequested && r.deadline.Before(b.now) {
					for _, l := range r.lines {
						late = append(late, l.SKUID)
					}
				}
			}
			if len(late) == 0 {
				continue
			}
			b.touch(st)
			b.reject(st, order.RejectTimeout, late, st.requested())
			b.releaseHeld(st)
		}
		if err := b.write(); err != nil {
			return err
		}
		res, err = b.result()
		return err
	})
	if err != nil {
		return nil, batchError(err)
	}
	return res, nil
}

// batchError classifies a failed batch: a conflict with another writer, a
// database that is down, a constraint violation, or anything else.
func batchError(err error) error {
	var pe *PoisonError
	var re *ReopenError
	if errors.As(err, &pe) || errors.Is(err, ErrBatchConflict) || errors.As(err, &re) {
		return err
	}
	var pqe *pq.Error
	if errors.As(err, &pqe) {
		switch pqe.Code.Name() {
		case "unique_violation", "deadlock_detected", "serialization_failure", "lock_not_available":
			return fmt.Errorf("%w: %w", ErrBatchConflict, err)
		}
	}
	return translate(err)
}

// partBatch is one transaction of a partition: what it loaded, the ledger
// it decides against, and what it will write.
type partBatch struct {
	ctx context.Context
	tx  *sqlx.Tx
	p   int // -1 for the sweeper, which holds no partition's SKUs
	cfg PartitionConfig
	now time.Time

	hold      map[uuid.UUID]bool // SKUs whose stock must not come back in this batch (soldout.go)
	held      []uuid.UUID        // commands not applied for that
	ledger    *order.Ledger
	before    map[uuid.UUID]order.SKU  // the locked SKUs as read
	versions  map[uuid.UUID]int64      // the locked SKUs' row versions: as read, then as written (soldout.go)
	foreign   map[uuid.UUID]*order.SKU // other SKUs the batch prices, read without a lock
	orders    map[uuid.UUID]*orderState
	processed map[uuid.UUID]bool
	existing  map[uuid.UUID]bool // orders of checkouts that exist already
	numbers   map[string]bool    // order numbers in use
	addresses map[uuid.UUID]bool // addresses of checkouts that exist

	// Cancels that came before their checkouts (tombstones.go).
	tombs    map[uuid.UUID]string // orders cancelled before they were seen, and by whom
	newTombs []tombstone          // cancels of orders not seen yet, to remember
	spent    []uuid.UUID          // tombstones of orders the batch wrote, to forget

	touched  []*orderState // orders the batch created or changed, in first-change order
	isTouchd map[uuid.UUID]bool
	applied  []order.Command
	redo     []uuid.UUID // orders of skipped commands, re-read for the status cache
	outbox   []OutboxMessage
	outcomes []Outcome
	cart     map[string][]uuid.UUID
}

func newPartBatch(ctx context.Context, tx *sqlx.Tx, p int, cfg PartitionConfig) *partBatch {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return &partBatch{
		ctx: ctx, tx: tx, p: p, cfg: cfg, now: now,
		ledger:    &order.Ledger{SKUs: map[uuid.UUID]*order.SKU{}, Held: map[order.UserSKU]int64{}, Now: now},
		before:    map[uuid.UUID]order.SKU{},
		versions:  map[uuid.UUID]int64{},
		foreign:   map[uuid.UUID]*order.SKU{},
		orders:    map[uuid.UUID]*orderState{},
		processed: map[uuid.UUID]bool{},
		existing:  map[uuid.UUID]bool{},
		tombs:     map[uuid.UUID]string{},
		numbers:   map[string]bool{},
		addresses: map[uuid.UUID]bool{},
		isTouchd:  map[uuid.UUID]bool{},
		cart:      map[string][]uuid.UUID{},
	}
}

func (b *partBatch) run(cmds []order.Command) (*BatchResult, error) {
	seen := make(map[uuid.UUID]bool, len(cmds))
	uniq := cmds[:0:0]
	for _, c := range cmds {
		if !seen[c.ID] {
			seen[c.ID] = true
			uniq = append(uniq, c)
		}
	}
	if err := b.load(uniq); err != nil {
		return nil, err
	}
	for _, c := range uniq {
		if b.processed[c.ID] || (c.Kind == order.KindCheckout && (b.existing[c.Checkout.OrderID] || b.orders[c.Checkout.OrderID] != nil)) {
			// Applied before, or the same order again under a new command
			// id (an ingress retry): re-read it for the status cache.
			b.skip(c)
			continue
		}
		if b.holds(c) {
			b.held = append(b.held, c.ID) // waits for the sold-out markers (soldout.go)
			continue
		}
		if err := b.apply(c); err != nil {
			return nil, err
		}
	}
	if err := b.write(); err != nil {
		return nil, err
	}
	return b.result()
}

// commandOrder returns the order a command is about.
func commandOrder(c order.Command) uuid.UUID {
	switch {
	case c.Checkout != nil:
		return c.Checkout.OrderID
	case c.Reserve != nil:
		return c.Reserve.OrderID
	case c.Release != nil:
		return c.Release.OrderID
	case c.Cancel != nil:
		return c.Cancel.OrderID
	}
	return uuid.Nil
}

// load locks and reads everything the batch decides on.
func (b *partBatch) load(cmds []order.Command) error {
	ctx, tx := b.ctx, b.tx
	var (
		lockIDs, cmdIDs, checkoutIDs, addrIDs []uuid.UUID
		numbers                               []string
		skus                                  = map[uuid.UUID]bool{}
		users                                 = map[string]bool{}
	)
	for _, c := range cmds {
		cmdIDs = append(cmdIDs, c.ID)
		switch c.Kind {
		case order.KindCheckout:
			k := c.Checkout
			checkoutIDs = append(checkoutIDs, k.OrderID)
			addrIDs = append(addrIDs, k.AddressID)
			numbers = append(numbers, k.OrderNumber)
			users[k.UserID] = true
			for _, l := range k.Lines {
				if order.Partition(l.SKUID, b.cfg.Partitions) == b.p {
					skus[l.SKUID] = true
				}
			}
		case order.KindReserve:
			lockIDs = append(lockIDs, c.Reserve.OrderID)
			users[c.Reserve.UserID] = true
			for _, l := range c.Reserve.Lines {
				skus[l.SKUID] = true
			}
		case order.KindRelease, order.KindCancel:
			lockIDs = append(lockIDs, commandOrder(c))
		case order.KindRestock:
			skus[c.Restock.SKUID] = true
		}
	}

	// 1. Orders first, then the partition's tombstone lock, then SKUs,
	// each in id order.
	var err error
	if b.orders, err = loadOrders(ctx, tx, lockIDs, true); err != nil {
		return err
	}
	unseen := b.unseenCancels(cmds)
	if err := b.lockTombstones(len(unseen) > 0, len(checkoutIDs) > 0); err != nil {
		return err
	}
	b.heldSKUs(skus)
	if err := b.lockSKUs(skus); err != nil {
		return err
	}

	// 2. What was applied already: read after the locks, so a second
	// writer that waited on them sees the first one's commit.
	var done []uuid.UUID
	if err := tx.SelectContext(ctx, &done, `SELECT id FROM processed_commands WHERE id = ANY($1::uuid[])`, pq.Array(uuidTexts(cmdIDs))); err != nil {
		return fmt.Errorf("read processed commands: %w", err)
	}
	for _, id := range done {
		b.processed[id] = true
	}
	if err := b.readTombstones(checkoutIDs, unseen); err != nil {
		return err
	}
	if len(checkoutIDs) > 0 {
		var nums []string
		if err := tx.SelectContext(ctx, &nums, `SELECT order_number FROM orders WHERE order_number = ANY($1::text[])`, pq.Array(numbers)); err != nil {
			return fmt.Errorf("read order numbers: %w", err)
		}
		for _, n := range nums {
			b.numbers[n] = true
		}
		var addrs []uuid.UUID
		if err := tx.SelectContext(ctx, &addrs, `SELECT id FROM addresses WHERE id = ANY($1::uuid[])`, pq.Array(uuidTexts(addrIDs))); err != nil {
			return fmt.Errorf("read addresses: %w", err)
		}
		for _, id := range addrs {
			b.addresses[id] = true
		}
	}

	// 3. Other partitions' SKUs that multi-partition orders name (prices
	// of rejected lines, currencies and holds at confirmation).
	if err := b.loadForeign(cmds); err != nil {
		return err
	}

	// 4. What users hold of the SKUs that limit it.
	var limited []string
	for id, s := range b.ledger.SKUs {
		if s.PerUserLimit != nil {
			limited = append(limited, id.String())
		}
	}
	if len(limited) > 0 && len(users) > 0 {
		var held []struct {
			User string    `db:"user_id"`
			SKU  uuid.UUID `db:"sku_id"`
			Qty  int64     `db:"qty"`
		}
		err := tx.SelectContext(ctx, &held, `
			SELECT o.user_id, l.sku_id, sum(l.quantity)::bigint AS qty
			FROM orders o JOIN order_lines l ON l.order_id = o.id
			WHERE o.user_id = ANY($1::text[]) AND l.sku_id = ANY($2::uuid[]) AND o.status IN ('confirmed', 'paid')
			GROUP BY 1, 2
			UNION ALL
			SELECT o.user_id, (e->>'sku_id')::uuid, sum((e->>'quantity')::bigint)::bigint
			FROM orders o JOIN reservations r ON r.order_id = o.id CROSS JOIN LATERAL jsonb_array_elements(r.lines) e
			WHERE o.user_id = ANY($1::text[]) AND o.status = 'pending' AND r.partition = $3 AND r.status = 'held'
			GROUP BY 1, 2`,
			pq.Array(slices.Collect(maps.Keys(users))), pq.Array(limited), b.p)
		if err != nil {
			return fmt.Errorf("read held quantities: %w", err)
		}
		for _, h := range held {
			if b.ledger.SKUs[h.SKU] != nil {
				b.ledger.Held[order.UserSKU{User: h.User, SKU: h.SKU}] += h.Qty
			}
		}
	}
	return nil
}

// lockSKUs locks and reads the SKUs skus (of this partition) into the
// ledger, in id order. NO KEY UPDATE excludes every other writer of the SKU
// but not the KEY SHARE locks of foreign keys: another partition that
// confirms a multi-partition order inserts lines referencing these SKUs and
// need not wait for this batch.
func (b *partBatch) lockSKUs(skus map[uuid.UUID]bool) error {
	if len(skus) == 0 {
		return nil
	}
	var rows []lockedSKU
	err := b.tx.SelectContext(b.ctx, &rows, `
		SELECT id, name, price, currency, stock, initial_stock, restocked, units_sold, per_user_limit,
			sale_starts_at, sale_ends_at, payment_hold_seconds, paused, created_at, updated_at, version
		FROM skus WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE`, pq.Array(uuidTexts(slices.Collect(maps.Keys(skus)))))
	if err != nil {
		return fmt.Errorf("lock skus: %w", err)
	}
	for i := range rows {
		s := rows[i].SKU
		b.before[s.ID] = s
		b.ledger.SKUs[s.ID] = &rows[i].SKU
		b.versions[s.ID] = rows[i].Version
	}
	return nil
}

// heldSKUs adds to skus the SKUs of this partition that the loaded orders
// hold or reserve here: what releasing them would move.
func (b *partBatch) heldSKUs(skus map[uuid.UUID]bool) {
	for _, st := range b.orders {
		if r := st.resv[b.p]; r != nil {
			for _, l := range r.lines {
				skus[l.SKUID] = true
			}
		}
		for _, l := range st.o.Lines {
			if order.Partition(l.SKUID, b.cfg.Partitions) == b.p {
				skus[l.SKUID] = true
			}
		}
	}
}

// loadForeign reads, without a lock, the SKUs of other partitions that
// multi-partition checkouts in cmds and the loaded orders name.
func (b *partBatch) loadForeign(cmds []order.Command) error {
	want := map[uuid.UUID]bool{}
	add := func(id uuid.UUID) {
		if b.ledger.SKUs[id] == nil {
			want[id] = true
		}
	}
	for _, c := range cmds {
		if c.Kind == order.KindCheckout {
			for _, l := range c.Checkout.Lines {
				add(l.SKUID)
			}
		}
	}
	for _, st := range b.orders {
		for _, r := range st.resv {
			for _, l := range r.lines {
				add(l.SKUID)
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	var rows []order.SKU
	err := b.tx.SelectContext(b.ctx, &rows, `
		SELECT id, name, price, currency, payment_hold_seconds FROM skus WHERE id = ANY($1::uuid[])`,
		pq.Array(uuidTexts(slices.Collect(maps.Keys(want)))))
	if err != nil {
		return fmt.Errorf("read skus: %w", err)
	}
	for i := range rows {
		b.foreign[rows[i].ID] = &rows[i]
	}
	return nil
}

// sku returns what the batch knows of a SKU: locked, or read without a lock,
// or nil if it does not exist.
func (b *partBatch) sku(id uuid.UUID) *order.SKU {
	if s := b.ledger.SKUs[id]; s != nil {
		return s
	}
	return b.foreign[id]
}

// touch registers st as written by the batch: its reservations, and its
// row too if it is dirty.
func (b *partBatch) touch(st *orderState) {
	if !b.isTouchd[st.o.ID] {
		b.isTouchd[st.o.ID] = true
		b.touched = append(b.touched, st)
	}
}

func (b *partBatch) skip(c order.Command) {
	if id := commandOrder(c); id != uuid.Nil {
		b.redo = append(b.redo, id)
	}
}

func (b *partBatch) send(cmd order.Command) error {
	m, err := CommandMessage(cmd)
	if err != nil {
		return err
	}
	b.outbox = append(b.outbox, m)
	return nil
}

// emit queues the event announcing st's current status, with the order as
// it is now.
func (b *partBatch) emit(st *orderState) error {
	st.dirty = true
	b.touch(st)
	snap := *st.o
	snap.Lines = slices.Clone(st.o.Lines)
	if snap.Lines == nil {
		snap.Lines = []order.Line{}
	}
	m, err := EventMessage(order.OrderEvent(&snap, b.now))
	if err != nil {
		return err
	}
	b.outbox = append(b.outbox, m)
	b.outcomes = append(b.outcomes, Outcome{OrderID: st.o.ID, Status: st.o.Status, Reason: st.o.RejectReason})
	return nil
}

func (b *partBatch) apply(c order.Command) error {
	var err error
	switch c.Kind {
	case order.KindCheckout:
		err = b.checkout(c)
	case order.KindReserve:
		err = b.reserve(c)
	case order.KindRelease:
		err = b.release(c)
	case order.KindCancel:
		err = b.cancel(c)
	case order.KindRestock:
		b.ledger.Restock(c.Restock.SKUID, c.Restock.Quantity) // an unknown SKU: nothing to restock
	default:
		err = &PoisonError{CommandID: c.ID, Err: order.Errorf(order.EINVALID, "unknown command kind %q", c.Kind)}
	}
	if err != nil {
		return err
	}
	b.applied = append(b.applied, c)
	return nil
}

func (b *partBatch) at(c order.Command) time.Time {
	if c.At.IsZero() {
		return b.now
	}
	return c.At.UTC().Truncate(time.Microsecond)
}

// checkout places an order: decided at once when all its lines are in this
// partition, else the start of a reservation saga with this partition as
// the order's home.
func (b *partBatch) checkout(c order.Command) error {
	k := c.Checkout
	switch {
	case !b.addresses[k.AddressID]:
		return &PoisonError{CommandID: c.ID, Err: order.Errorf(order.EINVALID, "address %s does not exist", k.AddressID)}
	case len(k.UserID) > 128:
		return &PoisonError{CommandID: c.ID, Err: order.Errorf(order.EINVALID, "user id longer than 128 bytes")}
	}
	number := k.OrderNumber
	if b.numbers[number] {
		// The ingress hands out unique numbers; should two orders still
		// meet on one, the second keeps a unique variant rather than being
		// lost.
		number += "-" + k.OrderID.String()[:8]
	}
	b.numbers[number] = true
	at := b.at(c)
	st := &orderState{
		o: &order.Order{
			ID: k.OrderID, Number: number, UserID: k.UserID, AddressID: k.AddressID,
			PaymentMethod: k.PaymentMethod, Status: order.StatusPending, Lines: []order.Line{},
			ShippingFee: k.ShippingFee, GrandTotal: k.ShippingFee, AcceptedAt: at, UpdatedAt: b.now,
		},
		home: b.p, fromCart: k.FromCart, idemKey: k.IdempotencyKey, reqHash: k.RequestHash,
		isNew: true, resv: map[int]*resvState{},
	}
	b.orders[k.OrderID] = st
	b.touch(st)
	if b.cancelledBefore(k) {
		return b.cancelUnseen(st, k.Lines)
	}

	parts := order.SplitByPartition(k.Lines, b.cfg.Partitions)
	b.ledger.Now = at
	if len(parts) == 1 {
		d := b.ledger.Take(k.UserID, k.Lines)
		if !d.OK() {
			return b.reject(st, d.Reason, d.SKUs, k.Lines)
		}
		quote(d.Lines, k.Prices)
		return b.confirm(st, d.Lines)
	}

	d := b.ledger.Take(k.UserID, parts[b.p])
	if !d.OK() {
		return b.reject(st, d.Reason, d.SKUs, k.Lines)
	}
	quote(d.Lines, k.Prices)
	lineNo := make(map[uuid.UUID]int, len(k.Lines))
	for i, l := range k.Lines {
		lineNo[l.SKUID] = i
	}
	deadline := b.now.Add(b.cfg.ReservationTimeout)
	for _, q := range slices.Sorted(maps.Keys(parts)) {
		r := &resvState{partition: q, deadline: deadline, isNew: true, dirty: true}
		if q == b.p {
			r.status = resvHeld
			for _, l := range d.Lines {
				r.lines = append(r.lines, resvLine{LineNo: lineNo[l.SKUID], SKUID: l.SKUID, Name: l.Name, Quantity: l.Quantity, UnitPrice: l.UnitPrice})
			}
		} else {
			r.status = resvRequested
			for _, l := range parts[q] {
				r.lines = append(r.lines, resvLine{LineNo: lineNo[l.SKUID], SKUID: l.SKUID, Quantity: l.Quantity})
			}
			err := b.send(order.Command{
				ID:        uuid.NewSHA1(k.OrderID, fmt.Appendf(nil, "reserve/%d", q)),
				Kind:      order.KindReserve,
				Partition: q,
				At:        at,
				Reserve:   &order.Reserve{OrderID: k.OrderID, UserID: k.UserID, Home: b.p, Lines: parts[q], Prices: quotedOf(parts[q], k.Prices)},
			})
			if err != nil {
				return err
			}
		}
		st.resv[q] = r
	}
	b.outcomes = append(b.outcomes, Outcome{OrderID: k.OrderID, Status: order.StatusPending})
	return nil
}

// quote sets the unit prices of lines to those the ingress quoted when it
// accepted the order, where it quoted one: an order accepted before a price
// change keeps the old price.
func quote(lines []order.Line, prices map[uuid.UUID]int64) {
	for i := range lines {
		if p, ok := prices[lines[i].SKUID]; ok {
			lines[i].UnitPrice = p
			lines[i].LineTotal = p * lines[i].Quantity
		}
	}
}

// quotedOf returns the quoted prices of lines' SKUs, nil if none.
func quotedOf(lines []order.LineRequest, prices map[uuid.UUID]int64) map[uuid.UUID]int64 {
	var out map[uuid.UUID]int64
	for _, l := range lines {
		if p, ok := prices[l.SKUID]; ok {
			if out == nil {
				out = make(map[uuid.UUID]int64, len(lines))
			}
			out[l.SKUID] = p
		}
	}
	return out
}

// reserve takes an order's lines in this partition for its home, then
// settles the order if this was the last reservation it waited for.
func (b *partBatch) reserve(c order.Command) error {
	st := b.orders[c.Reserve.OrderID]
	if st == nil {
		return nil // no such order (it was never written): nothing to hold
	}
	r := st.resv[b.p]
	if r == nil || r.status != resvRequested {
		return nil // applied already, or released before it arrived
	}
	b.touch(st)
	r.dirty = true
	if st.o.Status != order.StatusPending {
		r.status = resvReleased // decided (timed out, cancelled) meanwhile: take nothing
		return nil
	}
	b.ledger.Now = b.at(c)
	d := b.ledger.Take(st.o.UserID, r.requests())
	if !d.OK() {
		r.status, r.reason = resvFailed, string(d.Reason)
		return b.settle(st, &d)
	}
	r.status = resvHeld
	quote(d.Lines, c.Reserve.Prices)
	for i, l := range d.Lines {
		r.lines[i].Name, r.lines[i].UnitPrice = l.Name, l.UnitPrice
	}
	return b.settle(st, nil)
}

// settle decides a pending multi-partition order once its reservations
// allow: rejected (and what is held released) as soon as one failed,
// confirmed when all are held.
func (b *partBatch) settle(st *orderState, failed *order.Decision) error {
	if st.o.Status != order.StatusPending {
		return nil
	}
	if failed != nil {
		if err := b.reject(st, failed.Reason, failed.SKUs, st.requested()); err != nil {
			return err
		}
		return b.releaseHeld(st)
	}
	var lines []resvLine
	for _, r := range st.resv {
		if r.status != resvHeld {
			return nil // still waiting
		}
		lines = append(lines, r.lines...)
	}
	slices.SortFunc(lines, func(a, b resvLine) int { return a.LineNo - b.LineNo })
	out := make([]order.Line, len(lines))
	currency := ""
	var mismatch []uuid.UUID
	for i, l := range lines {
		out[i] = order.Line{SKUID: l.SKUID, Name: l.Name, Quantity: l.Quantity, UnitPrice: l.UnitPrice, LineTotal: l.UnitPrice * l.Quantity}
		s := b.sku(l.SKUID)
		switch {
		case s == nil:
			mismatch = append(mismatch, l.SKUID)
		case currency == "":
			currency = s.Currency
		case s.Currency != currency:
			mismatch = append(mismatch, l.SKUID)
		}
	}
	if len(mismatch) > 0 {
		// Each partition checks its own lines; only here are they all.
		if err := b.reject(st, order.RejectCurrencyMismatch, mismatch, st.requested()); err != nil {
			return err
		}
		return b.releaseHeld(st)
	}
	for _, r := range st.resv {
		r.status, r.dirty = resvConfirmed, true
	}
	return b.confirm(st, out)
}

// releaseHeld gives back what a no longer holding order holds in every
// partition: this partition's directly, the others' through release
// commands.
func (b *partBatch) releaseHeld(st *orderState) error {
	for _, r := range st.sortedResv() {
		if r.status != resvHeld && r.status != resvConfirmed {
			continue
		}
		if r.partition == b.p && b.knowsAll(r.lines) {
			b.ledger.Release(st.o.UserID, r.orderLines())
			r.status, r.dirty = resvReleased, true
			continue
		}
		err := b.send(order.Command{
			ID:        uuid.NewSHA1(st.o.ID, fmt.Appendf(nil, "release/%d", r.partition)),
			Kind:      order.KindRelease,
			Partition: r.partition,
			At:        b.now,
			Release:   &order.Release{OrderID: st.o.ID, Reason: string(st.o.Status)},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *partBatch) knowsAll(lines []resvLine) bool {
	for _, l := range lines {
		if b.ledger.SKUs[l.SKUID] == nil {
			return false
		}
	}
	return true
}

// release gives back what an order that no longer holds stock (rejected,
// cancelled, expired) holds in this partition, once: the reservation row
// records it, and is created for an order that had none (a one-partition
// order).
func (b *partBatch) release(c order.Command) error {
	st := b.orders[c.Release.OrderID]
	if st == nil || st.o.Status == order.StatusPending || st.o.Status.Holds() {
		return nil // nothing to release, or the order still holds its stock
	}
	r := st.resv[b.p]
	if r == nil {
		r = &resvState{partition: b.p, status: resvConfirmed, deadline: b.now, isNew: true}
		for i, l := range st.o.Lines {
			if order.Partition(l.SKUID, b.cfg.Partitions) == b.p {
				r.lines = append(r.lines, resvLine{LineNo: i, SKUID: l.SKUID, Name: l.Name, Quantity: l.Quantity, UnitPrice: l.UnitPrice})
			}
		}
		if st.o.Status == order.StatusRejected {
			r.status = resvReleased // a rejected one-partition order never held anything
		}
		st.resv[b.p] = r
	}
	switch r.status {
	case resvHeld, resvConfirmed:
		b.ledger.Release(st.o.UserID, r.orderLines())
		r.status = resvReleased
	case resvRequested:
		r.status = resvReleased // the reserve, when it comes, takes nothing
	default:
		return nil
	}
	r.dirty = true
	b.touch(st)
	return nil
}

// cancel cancels a pending or confirmed order at its home partition and
// gives its stock back. The cancel of an order this partition has not seen
// yet is remembered: its checkout, when it comes, is cancelled
// (tombstones.go).
func (b *partBatch) cancel(c order.Command) error {
	st := b.orders[c.Cancel.OrderID]
	if st == nil {
		b.remember(c)
		return nil
	}
	if st.o.UserID != c.Cancel.UserID || st.home != b.p {
		return nil // not this user's order, or not at this home
	}
	if prev := st.o.Status; prev != order.StatusPending && prev != order.StatusConfirmed {
		return nil // final already (paid orders are not cancelled: refunds are out of scope)
	}
	return b.end(st, order.StatusCancelled)
}

// end moves st, pending or confirmed at its home partition (this one), to
// a final status that holds nothing (cancelled, expired), announces it, and
// gives its stock back: what it holds in this partition through the ledger
// in this transaction, what it holds in others by release commands through
// the outbox. Cancel and expiry share it.
func (b *partBatch) end(st *orderState, to order.Status) error {
	prev := st.o.Status
	b.touch(st)
	if prev == order.StatusPending {
		b.priceRequested(st, st.requested()) // its lines were not written yet
	}
	st.o.Status = to
	st.o.UpdatedAt = b.now
	if err := b.emit(st); err != nil {
		return err
	}
	if len(st.resv) == 0 {
		// A one-partition order: every line is here. Record the release so
		// that a later release command finds it done.
		r := &resvState{partition: b.p, status: resvReleased, deadline: b.now, isNew: true, dirty: true}
		for i, l := range st.o.Lines {
			r.lines = append(r.lines, resvLine{LineNo: i, SKUID: l.SKUID, Name: l.Name, Quantity: l.Quantity, UnitPrice: l.UnitPrice})
		}
		st.resv[b.p] = r
		if prev == order.StatusConfirmed {
			b.ledger.Release(st.o.UserID, r.orderLines())
		}
		return nil
	}
	return b.releaseHeld(st)
}

// confirm records that st took lines.
func (b *partBatch) confirm(st *orderState, lines []order.Line) error {
	o := st.o
	o.Status = order.StatusConfirmed
	o.RejectReason, o.RejectSKUs = "", nil
	o.Lines = lines
	o.Currency = ""
	// A line's hold is its SKU's, or the configured one; the order's is
	// the shortest of its lines'.
	hold := time.Duration(0)
	for _, l := range lines {
		h := b.cfg.PaymentHold
		s := b.sku(l.SKUID)
		if s != nil {
			if o.Currency == "" {
				o.Currency = s.Currency
			}
			if s.PaymentHoldSeconds != nil {
				h = time.Duration(*s.PaymentHoldSeconds) * time.Second
			}
		}
		if hold == 0 || h < hold {
			hold = h
		}
	}
	o.Price()
	now := b.now
	until := now.Add(hold)
	o.DecidedAt, o.HoldUntil, o.UpdatedAt = &now, &until, now
	st.insertLines = true
	b.touch(st)
	if st.fromCart {
		for _, l := range lines {
			b.cart[o.UserID] = append(b.cart[o.UserID], l.SKUID)
		}
	}
	return b.emit(st)
}

// reject records that st was refused for reason, naming skus. Its lines are
// those of lines whose SKUs exist, at their current price.
func (b *partBatch) reject(st *orderState, reason order.RejectReason, skus []uuid.UUID, lines []order.LineRequest) error {
	o := st.o
	o.Status = order.StatusRejected
	o.RejectReason, o.RejectSKUs = reason, skus
	b.priceRequested(st, lines)
	now := b.now
	o.DecidedAt, o.HoldUntil, o.UpdatedAt = &now, nil, now
	st.insertLines = true
	b.touch(st)
	return b.emit(st)
}

// priceRequested sets the lines of an order that holds nothing (rejected,
// or cancelled before it was decided) to those of lines whose SKUs exist,
// at their current prices, to be written with it.
func (b *partBatch) priceRequested(st *orderState, lines []order.LineRequest) {
	o := st.o
	o.Lines = []order.Line{}
	o.Currency = ""
	for _, l := range lines {
		s := b.sku(l.SKUID)
		if s == nil {
			continue
		}
		if o.Currency == "" {
			o.Currency = s.Currency
		}
		o.Lines = append(o.Lines, order.Line{SKUID: l.SKUID, Name: s.Name, Quantity: l.Quantity, UnitPrice: s.Price})
	}
	o.Price()
	st.insertLines = true
}

// write stores everything the batch decided.
func (b *partBatch) write() error {
	ctx, tx := b.ctx, b.tx

	// The SKUs, guarded: each UPDATE matches only if the row still holds
	// what the batch read. Under the row locks it always does; the guard is
	// the net should a writer ever skip the lock.
	var changed []uuid.UUID
	for _, id := range slices.SortedFunc(maps.Keys(b.ledger.SKUs), func(a, c uuid.UUID) int { return bytes.Compare(a[:], c[:]) }) {
		s, was := b.ledger.SKUs[id], b.before[id]
		if s.Stock != was.Stock || s.UnitsSold != was.UnitsSold || s.Restocked != was.Restocked {
			changed = append(changed, id)
		}
	}
	if err := b.updateSKUs(changed); err != nil {
		return err
	}
	// Stock back from 0: the sold-out markers go before the commit.
	if err := b.reopen(changed); err != nil {
		return err
	}

	var inserts, updates, withLines []*orderState
	var resv []resvWrite
	for _, st := range b.touched {
		switch {
		case st.isNew:
			inserts = append(inserts, st)
		case st.dirty:
			updates = append(updates, st)
		}
		if st.insertLines {
			withLines = append(withLines, st)
		}
		for _, r := range st.sortedResv() {
			if r.dirty || r.isNew {
				resv = append(resv, resvWrite{orderID: st.o.ID, r: r})
			}
		}
	}
	if err := insertOrders(ctx, tx, inserts); err != nil {
		return err
	}
	if err := updateOrders(ctx, tx, updates); err != nil {
		return err
	}
	if err := insertOrderLines(ctx, tx, withLines); err != nil {
		return err
	}
	if err := upsertReservations(ctx, tx, resv, b.now); err != nil {
		return err
	}
	if err := b.writeTombstones(); err != nil {
		return err
	}
	if len(b.applied) > 0 {
		ids := make([]string, len(b.applied))
		kinds := make([]string, len(b.applied))
		for i, c := range b.applied {
			ids[i], kinds[i] = c.ID.String(), string(c.Kind)
		}
		// No ON CONFLICT: a second writer that applied the same command
		// makes this batch fail and start over, and then skip it.
		_, err := tx.ExecContext(ctx, `
			INSERT INTO processed_commands (id, kind, partition, applied_at)
			SELECT v.id, v.kind, $3, $4::timestamptz FROM unnest($1::uuid[], $2::text[]) AS v(id, kind)`,
			pq.Array(ids), pq.Array(kinds), b.p, pgTime(b.now))
		if err != nil {
			return fmt.Errorf("insert processed commands: %w", err)
		}
	}
	for _, id := range changed {
		s, was := b.ledger.SKUs[id], b.before[id]
		m, err := EventMessage(order.StockEvent(order.StockChange{SKUID: id, Stock: s.Stock, UnitsSold: s.UnitsSold, Delta: s.Stock - was.Stock}, b.now))
		if err != nil {
			return err
		}
		b.outbox = append(b.outbox, m)
	}
	return InsertOutbox(ctx, tx, b.outbox)
}

// updateSKUs writes the changed SKUs in one statement, guarded by the stock
// and units sold the batch read; ErrBatchConflict if any row did not match.
func (b *partBatch) updateSKUs(ids []uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	n := len(ids)
	stock, sold, restocked, oldStock, oldSold := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, id := range ids {
		s, was := b.ledger.SKUs[id], b.before[id]
		stock[i], sold[i], restocked[i], oldStock[i], oldSold[i] = s.Stock, s.UnitsSold, s.Restocked, was.Stock, was.UnitsSold
	}
	written, err := updateSKUsGuarded(b.ctx, b.tx, uuidTexts(ids), stock, sold, restocked, oldStock, oldSold, b.now)
	for id, v := range written {
		b.versions[id] = v // what this transaction commits (soldout.go)
	}
	return err
}

// updateSKUsGuarded writes the SKUs and returns the row versions it wrote.
func updateSKUsGuarded(ctx context.Context, tx sqlx.QueryerContext, ids []string, stock, sold, restocked, oldStock, oldSold []int64, now time.Time) (map[uuid.UUID]int64, error) {
	var rows []struct {
		ID      uuid.UUID `db:"id"`
		Version int64     `db:"version"`
	}
	err := sqlx.SelectContext(ctx, tx, &rows, `
		UPDATE skus AS s SET stock = v.stock, units_sold = v.units_sold, restocked = v.restocked,
			version = s.version + 1, updated_at = $7::timestamptz
		FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
			AS v(id, stock, units_sold, restocked, old_stock, old_units_sold)
		WHERE s.id = v.id AND s.stock = v.old_stock AND s.units_sold = v.old_units_sold
		RETURNING s.id, s.version`,
		pq.Array(ids), pq.Array(stock), pq.Array(sold), pq.Array(restocked), pq.Array(oldStock), pq.Array(oldSold), pgTime(now))
	if err != nil {
		return nil, fmt.Errorf("update skus: %w", err)
	}
	if len(rows) != len(ids) {
		return nil, fmt.Errorf("update skus: %d of %d rows matched their guard: %w", len(rows), len(ids), ErrBatchConflict)
	}
	out := make(map[uuid.UUID]int64, len(rows))
	for _, r := range rows {
		out[r.ID] = r.Version
	}
	return out, nil
}

// result collects the batch's outcomes and the current state of the orders
// the status cache should hold, re-reading those of skipped commands.
// checkouts counts the checkout commands the batch applied.
func (b *partBatch) checkouts() int {
	n := 0
	for _, c := range b.applied {
		if c.Kind == order.KindCheckout {
			n++
		}
	}
	return n
}

func (b *partBatch) result() (*BatchResult, error) {
	res := &BatchResult{
		Applied:      len(b.applied),
		Checkouts:    b.checkouts(),
		Skipped:      len(b.redo),
		Outcomes:     b.outcomes,
		CartRemovals: b.cart,
		Outbox:       len(b.outbox),
		SoldOut:      b.soldOut(),
	}
	seen := map[uuid.UUID]bool{}
	for _, st := range b.touched {
		if !st.dirty {
			continue
		}
		seen[st.o.ID] = true
		if st.o.Status != order.StatusPending {
			o := *st.o
			o.Lines = slices.Clone(st.o.Lines)
			res.Orders = append(res.Orders, &o)
		}
	}
	var reread []uuid.UUID
	for _, id := range b.redo {
		if !seen[id] {
			seen[id] = true
			reread = append(reread, id)
		}
	}
	if len(reread) > 0 {
		sts, err := loadOrders(b.ctx, b.tx, reread, false)
		if err != nil {
			return nil, err
		}
		for _, id := range reread {
			st := sts[id]
			if st == nil || st.o.Status == order.StatusPending {
				continue
			}
			res.Orders = append(res.Orders, st.o)
			if st.o.Status == order.StatusConfirmed && st.fromCart {
				for _, l := range st.o.Lines {
					res.CartRemovals[st.o.UserID] = append(res.CartRemovals[st.o.UserID], l.SKUID)
				}
			}
		}
	}
	return res, nil
}
