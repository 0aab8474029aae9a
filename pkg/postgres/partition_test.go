package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// The tests of this file drive ApplyBatch directly, playing the relay by
// hand (ptDeliver) where commands travel between partitions.

const ptParts = 4

// ptEnv is a migrated database and the defaults a test builds commands with.
type ptEnv struct {
	t   *testing.T
	db  *postgres.DB
	cfg postgres.PartitionConfig
	seq int
}

func ptNew(t *testing.T) *ptEnv {
	t.Helper()
	_, db := pgtest.New(t)
	return &ptEnv{t: t, db: db, cfg: postgres.PartitionConfig{Partitions: ptParts, ReservationTimeout: time.Minute}}
}

// ptSKUIn returns a fresh SKU id in partition p of n.
func ptSKUIn(p, n int) uuid.UUID {
	for {
		id := uuid.New()
		if order.Partition(id, n) == p {
			return id
		}
	}
}

type ptSKUOpt func(*order.SKU)

func ptLimit(n int64) ptSKUOpt { return func(s *order.SKU) { s.PerUserLimit = &n } }

func ptCurrency(c string) ptSKUOpt { return func(s *order.SKU) { s.Currency = c } }

func ptHold(secs int64) ptSKUOpt { return func(s *order.SKU) { s.PaymentHoldSeconds = &secs } }

// sku inserts a SKU of partition p with stock units at price 1000 EUR.
func (e *ptEnv) sku(p int, stock int64, opts ...ptSKUOpt) uuid.UUID {
	e.t.Helper()
	s := order.SKU{ID: ptSKUIn(p, ptParts), Name: "sku", Price: 1000, Currency: "EUR", Stock: stock}
	for _, o := range opts {
		o(&s)
	}
	_, err := e.db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock, per_user_limit, payment_hold_seconds)
		VALUES ($1, $2, $3, $4, $5, $5, $6, $7)`, s.ID, s.Name, s.Price, s.Currency, s.Stock, s.PerUserLimit, s.PaymentHoldSeconds)
	if err != nil {
		e.t.Fatalf("insert sku: %v", err)
	}
	return s.ID
}

// address inserts an address of user.
func (e *ptEnv) address(user string) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	_, err := e.db.Exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		VALUES ($1, $2, 'R', 'L1', 'C', '1000', 'DE')`, id, user)
	if err != nil {
		e.t.Fatalf("insert address: %v", err)
	}
	return id
}

// checkout returns a checkout command of user for lines (sku, qty, sku,
// qty...), with an address of the user.
func (e *ptEnv) checkout(user string, lines ...any) order.Command {
	e.t.Helper()
	var ls []order.LineRequest
	for i := 0; i < len(lines); i += 2 {
		ls = append(ls, order.LineRequest{SKUID: lines[i].(uuid.UUID), Quantity: int64(lines[i+1].(int))})
	}
	e.seq++
	home := order.HomePartition(ls, ptParts)
	return order.Command{
		ID: uuid.New(), Kind: order.KindCheckout, Partition: home, At: time.Now(),
		Checkout: &order.Checkout{
			OrderID: uuid.New(), OrderNumber: order.NumberFor(time.Now(), int64(e.seq)), UserID: user,
			AddressID: e.address(user), PaymentMethod: order.PayCard, Lines: ls, ShippingFee: 1000,
		},
	}
}

// apply applies cmds (all of one partition) and fails the test on error.
func (e *ptEnv) apply(cmds ...order.Command) *postgres.BatchResult {
	e.t.Helper()
	res, err := e.db.ApplyBatch(context.Background(), cmds[0].Partition, cmds, e.cfg)
	if err != nil {
		e.t.Fatalf("apply batch: %v", err)
	}
	return res
}

// deliver plays the relay for commands: it takes the command messages out
// of the outbox and applies each to its partition, until none is left. It
// returns the events left in the outbox.
func (e *ptEnv) deliver() []order.Event {
	e.t.Helper()
	for range 10 {
		rows := e.outbox()
		var cmds []order.Command
		var ids []int64
		for _, r := range rows {
			if !strings.HasPrefix(r.Subject, "orders.cmd.") {
				continue
			}
			var p int
			fmt.Sscanf(r.Subject, "orders.cmd.%d", &p)
			cs, err := order.DecodeEnvelope(r.Payload, p, ptParts)
			if err != nil {
				e.t.Fatalf("outbox command: %v", err)
			}
			cmds = append(cmds, cs...)
			ids = append(ids, r.ID)
		}
		if len(cmds) == 0 {
			break
		}
		if _, err := e.db.Exec(`DELETE FROM outbox WHERE id = ANY($1)`, pqInt64s(ids)); err != nil {
			e.t.Fatal(err)
		}
		for _, c := range cmds {
			e.apply(c)
		}
	}
	var evs []order.Event
	for _, r := range e.outbox() {
		var ev order.Event
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			e.t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func pqInt64s(ids []int64) any {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return "{" + strings.Join(s, ",") + "}"
}

func (e *ptEnv) outbox() []postgres.OutboxRow {
	e.t.Helper()
	var rows []postgres.OutboxRow
	if err := e.db.Select(&rows, `SELECT id, msg_id, subject, payload, created_at FROM outbox ORDER BY id`); err != nil {
		e.t.Fatal(err)
	}
	return rows
}

type ptStock struct{ Stock, Sold int64 }

func (e *ptEnv) stock(id uuid.UUID) ptStock {
	e.t.Helper()
	var s ptStock
	if err := e.db.QueryRow(`SELECT stock, units_sold FROM skus WHERE id = $1`, id).Scan(&s.Stock, &s.Sold); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *ptEnv) status(id uuid.UUID) (order.Status, order.RejectReason) {
	e.t.Helper()
	var st string
	var reason *string
	if err := e.db.QueryRow(`SELECT status, reject_reason FROM orders WHERE id = $1`, id).Scan(&st, &reason); err != nil {
		e.t.Fatalf("order %s: %v", id, err)
	}
	if reason == nil {
		return order.Status(st), ""
	}
	return order.Status(st), order.RejectReason(*reason)
}

func (e *ptEnv) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestApplyBatchHotSKU(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(1, 10)
	var cmds []order.Command
	for i := range 30 {
		cmds = append(cmds, e.checkout(fmt.Sprintf("u%d", i), sku, 1))
	}
	confirmed, rejected := 0, 0
	for i := 0; i < len(cmds); i += 7 {
		res := e.apply(cmds[i:min(i+7, len(cmds))]...)
		for _, o := range res.Outcomes {
			switch {
			case o.Status == order.StatusConfirmed:
				confirmed++
			case o.Status == order.StatusRejected && o.Reason == order.RejectOutOfStock:
				rejected++
			default:
				t.Errorf("outcome %+v", o)
			}
		}
	}
	if confirmed != 10 || rejected != 20 {
		t.Errorf("confirmed %d rejected %d, want 10 and 20", confirmed, rejected)
	}
	// First come, first served: the first ten commands got the stock.
	for i, c := range cmds {
		st, _ := e.status(c.Checkout.OrderID)
		if want := order.StatusConfirmed; i >= 10 {
			want = order.StatusRejected
			if st != want {
				t.Errorf("order %d: %s, want %s", i, st, want)
			}
		} else if st != want {
			t.Errorf("order %d: %s, want %s", i, st, want)
		}
	}
	if got, want := e.stock(sku), (ptStock{0, 10}); got != want {
		t.Errorf("stock %+v, want %+v", got, want)
	}
	events := map[order.EventType]int{}
	for _, r := range e.outbox() {
		var ev order.Event
		json.Unmarshal(r.Payload, &ev)
		events[ev.Type]++
		if r.MsgID != ev.ID.String() || r.Subject != order.EventSubject(ev.Type) {
			t.Errorf("outbox row %s on %s for event %s %s", r.MsgID, r.Subject, ev.ID, ev.Type)
		}
	}
	if events[order.EventConfirmed] != 10 || events[order.EventRejected] != 20 || events[order.EventStockChanged] != 2 {
		t.Errorf("events %v, want 10 confirmed, 20 rejected, 2 stock.changed (one per batch that took stock)", events)
	}
	if n := e.count(`SELECT count(*) FROM order_lines`); n != 30 {
		t.Errorf("%d order lines, want 30 (rejected orders keep lines of existing SKUs)", n)
	}
}

func TestApplyBatchOrderFields(t *testing.T) {
	e := ptNew(t)
	e.cfg.PaymentHold = time.Hour
	a := e.sku(2, 5, ptHold(60))
	b := e.sku(2, 5, ptHold(120))
	c := e.checkout("u1", a, 2, b, 1)
	c.Checkout.FromCart = true
	before := time.Now()
	res := e.apply(c)
	if len(res.Orders) != 1 {
		t.Fatalf("%d orders in the result", len(res.Orders))
	}
	o := res.Orders[0]
	if o.Status != order.StatusConfirmed || o.Subtotal != 3000 || o.GrandTotal != 4000 || o.Currency != "EUR" || len(o.Lines) != 2 {
		t.Errorf("order %+v", o)
	}
	if o.HoldUntil == nil || o.HoldUntil.Sub(*o.DecidedAt) != time.Minute || o.DecidedAt.Before(before.Add(-time.Second)) {
		t.Errorf("hold until %v decided %v, want a minute (the shortest line's hold)", o.HoldUntil, o.DecidedAt)
	}
	if diff := cmp.Diff(map[string][]uuid.UUID{"u1": {a, b}}, res.CartRemovals); diff != "" {
		t.Errorf("cart removals (-want +got):\n%s", diff)
	}
	// What was cached is what was stored.
	stored, err := e.db.StoredOrderForTest(context.Background(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(o, stored); diff != "" {
		t.Errorf("stored order differs from the result (-result +stored):\n%s", diff)
	}

	// Without a SKU hold, the configured one; with both, the shortest.
	d := e.sku(2, 5)
	for _, tt := range []struct {
		cmd  order.Command
		cfg  time.Duration
		want time.Duration
	}{
		{e.checkout("u2", d, 1), time.Hour, time.Hour},
		{e.checkout("u3", a, 1, d, 1), time.Hour, time.Minute},
		{e.checkout("u4", a, 1, d, 1), 30 * time.Second, 30 * time.Second},
	} {
		e.cfg.PaymentHold = tt.cfg
		o := e.apply(tt.cmd).Orders[0]
		if got := o.HoldUntil.Sub(*o.DecidedAt); got != tt.want {
			t.Errorf("hold %v with PaymentHold %v, want %v", got, tt.cfg, tt.want)
		}
	}
}

func TestApplyBatchRejections(t *testing.T) {
	e := ptNew(t)
	ok := e.sku(0, 5)
	paused := e.sku(0, 5)
	e.db.MustExec(`UPDATE skus SET paused = true WHERE id = $1`, paused)
	later := e.sku(0, 5)
	e.db.MustExec(`UPDATE skus SET sale_starts_at = now() + interval '1 hour' WHERE id = $1`, later)
	missing := ptSKUIn(0, ptParts)
	tests := []struct {
		name   string
		cmd    order.Command
		reason order.RejectReason
		skus   []uuid.UUID
		lines  int
	}{
		{"not found", e.checkout("u1", ok, 1, missing, 1), order.RejectSKUNotFound, []uuid.UUID{missing}, 1},
		{"paused", e.checkout("u2", ok, 1, paused, 1), order.RejectSalePaused, []uuid.UUID{paused}, 2},
		{"not open", e.checkout("u3", later, 1), order.RejectSaleNotOpen, []uuid.UUID{later}, 1},
		{"out of stock", e.checkout("u4", ok, 6), order.RejectOutOfStock, []uuid.UUID{ok}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := e.apply(tt.cmd).Orders[0]
			if o.Status != order.StatusRejected || o.RejectReason != tt.reason || len(o.Lines) != tt.lines {
				t.Errorf("got %s %s with %d lines, want rejected %s with %d", o.Status, o.RejectReason, len(o.Lines), tt.reason, tt.lines)
			}
			if diff := cmp.Diff(tt.skus, o.RejectSKUs); diff != "" {
				t.Errorf("reject skus (-want +got):\n%s", diff)
			}
		})
	}
	if got := e.stock(ok); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v, want untouched", got)
	}
}

func TestApplyBatchRedelivery(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(3, 2)
	cmds := []order.Command{e.checkout("u1", sku, 1), e.checkout("u2", sku, 1), e.checkout("u3", sku, 1)}
	cmds[0].Checkout.FromCart = true
	first := e.apply(cmds...)
	outbox := len(e.outbox())
	again := e.apply(cmds...)
	if again.Applied != 0 || again.Skipped != 3 || len(again.Outcomes) != 0 || again.Outbox != 0 {
		t.Errorf("redelivery: applied %d skipped %d outcomes %d outbox %d, want 0 3 0 0", again.Applied, again.Skipped, len(again.Outcomes), again.Outbox)
	}
	if got := e.stock(sku); got != (ptStock{0, 2}) {
		t.Errorf("stock %+v", got)
	}
	if n := len(e.outbox()); n != outbox {
		t.Errorf("outbox grew from %d to %d", outbox, n)
	}
	// The redelivery re-reads the orders for the status cache, and redoes
	// the cart removal.
	if diff := cmp.Diff(first.Orders, again.Orders); diff != "" {
		t.Errorf("re-read orders (-first +again):\n%s", diff)
	}
	if diff := cmp.Diff(first.CartRemovals, again.CartRemovals); diff != "" {
		t.Errorf("cart removals (-first +again):\n%s", diff)
	}
	// The same order under a new command id (an ingress retry) is skipped
	// too.
	retry := cmds[2]
	retry.ID = uuid.New()
	if res := e.apply(retry); res.Applied != 0 || res.Skipped != 1 {
		t.Errorf("retry: applied %d skipped %d", res.Applied, res.Skipped)
	}
}

func TestApplyBatchPerUserLimit(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(1, 100, ptLimit(2))
	r := e.apply(e.checkout("u1", sku, 1), e.checkout("u1", sku, 1), e.checkout("u1", sku, 1), e.checkout("u2", sku, 2))
	var got []order.RejectReason
	for _, o := range r.Outcomes {
		got = append(got, o.Reason)
	}
	if diff := cmp.Diff([]order.RejectReason{"", "", order.RejectLimitExceeded, ""}, got); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	// Across batches, from the database.
	if o := e.apply(e.checkout("u1", sku, 1)).Outcomes[0]; o.Reason != order.RejectLimitExceeded {
		t.Errorf("next batch: %+v, want limit_exceeded", o)
	}
}

func TestApplyBatchPoison(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(0, 5)
	good := e.checkout("u1", sku, 1)
	bad := e.checkout("u2", sku, 1)
	bad.Checkout.AddressID = uuid.New()
	_, err := e.db.ApplyBatch(context.Background(), 0, []order.Command{good, bad}, e.cfg)
	var pe *postgres.PoisonError
	if !errors.As(err, &pe) || pe.CommandID != bad.ID {
		t.Fatalf("err %v, want a postgres.PoisonError naming %s", err, bad.ID)
	}
	if n := e.count(`SELECT count(*) FROM orders`); n != 0 {
		t.Errorf("%d orders written by a failed batch", n)
	}
	e.apply(good)
	if got := e.stock(sku); got != (ptStock{4, 1}) {
		t.Errorf("stock %+v", got)
	}
}

func TestUpdateSKUsGuard(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(0, 10)
	tx := e.db.MustBegin()
	defer tx.Rollback()
	// A writer that read stock 11 (stale) must not write.
	err := postgres.UpdateSKUsGuardedForTest(context.Background(), tx, []string{sku.String()}, []int64{10}, []int64{1}, []int64{0}, []int64{11}, []int64{0}, time.Now())
	if !errors.Is(err, postgres.ErrBatchConflict) {
		t.Fatalf("stale guard: %v, want postgres.ErrBatchConflict", err)
	}
	tx.Rollback()
	tx = e.db.MustBegin()
	err = postgres.UpdateSKUsGuardedForTest(context.Background(), tx, []string{sku.String()}, []int64{9}, []int64{1}, []int64{0}, []int64{10}, []int64{0}, time.Now())
	if err != nil {
		t.Fatalf("fresh guard: %v", err)
	}
	tx.Commit()
	if got := e.stock(sku); got != (ptStock{9, 1}) {
		t.Errorf("stock %+v", got)
	}
}

// TestApplyBatchSecondWriter runs two writers on one partition at once, as
// during a pin takeover, each applying the whole command stream in its own
// batches (so every command is offered twice, concurrently). Nothing is
// oversold, nothing applied twice, nobody rejected while stock remained.
func TestApplyBatchSecondWriter(t *testing.T) {
	e := ptNew(t)
	const stock, buyers = 50, 200
	sku := e.sku(2, stock)
	limited := e.sku(2, 1000, ptLimit(1))
	var cmds []order.Command
	for i := range buyers {
		cmds = append(cmds, e.checkout(fmt.Sprintf("u%d", i%150), sku, 1))
		cmds = append(cmds, e.checkout(fmt.Sprintf("u%d", i%150), limited, 1))
	}
	var wg sync.WaitGroup
	conflicts := make([]int, 2)
	for w := range 2 {
		wg.Go(func() {
			for i := 0; i < len(cmds); i += 16 + w*7 {
				batch := cmds[i:min(i+16+w*7, len(cmds))]
				for {
					_, err := e.db.ApplyBatch(context.Background(), 2, batch, e.cfg)
					if errors.Is(err, postgres.ErrBatchConflict) {
						conflicts[w]++
						continue
					}
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
					}
					break
				}
			}
		})
	}
	wg.Wait()
	t.Logf("conflicts retried: %v", conflicts)
	if got := e.stock(sku); got != (ptStock{0, stock}) {
		t.Errorf("hot sku %+v, want 0 left and %d sold", got, stock)
	}
	if got := e.stock(limited); got != (ptStock{1000 - 150, 150}) {
		t.Errorf("limited sku %+v, want one per user (150 users)", got)
	}
	if n := e.count(`SELECT count(*) FROM orders`); n != 2*buyers {
		t.Errorf("%d orders, want %d", n, 2*buyers)
	}
	if n := e.count(`SELECT count(*) FROM orders WHERE status = 'rejected' AND reject_reason NOT IN ('out_of_stock', 'limit_exceeded')`); n != 0 {
		t.Errorf("%d orders rejected for another reason", n)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE subject LIKE 'orders.events.order.%'`); n != 2*buyers {
		t.Errorf("%d order events, want exactly one per order", n)
	}
	if n := e.count(`SELECT count(*) FROM processed_commands`); n != 2*buyers {
		t.Errorf("%d processed commands", n)
	}
}

func TestApplyBatchRestock(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(3, 0)
	rs := order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 3, At: time.Now(), Restock: &order.Restock{SKUID: sku, Quantity: 7}}
	res := e.apply(rs)
	e.apply(rs) // redelivered
	if res.Applied != 1 || res.Outbox != 1 {
		t.Errorf("applied %d outbox %d", res.Applied, res.Outbox)
	}
	var restocked int64
	e.db.QueryRow(`SELECT restocked FROM skus WHERE id = $1`, sku).Scan(&restocked)
	if got := e.stock(sku); got != (ptStock{7, 0}) || restocked != 7 {
		t.Errorf("stock %+v restocked %d", got, restocked)
	}
	var ev order.Event
	json.Unmarshal(e.outbox()[0].Payload, &ev)
	data, _ := json.Marshal(ev.Data)
	var sc order.StockChange
	json.Unmarshal(data, &sc)
	if ev.Type != order.EventStockChanged || sc != (order.StockChange{SKUID: sku, Stock: 7, UnitsSold: 0, Delta: 7}) {
		t.Errorf("event %s %+v", ev.Type, sc)
	}
}

func TestApplyBatchCancel(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(1, 5)
	c := e.checkout("u1", sku, 2)
	e.apply(c)
	cancel := func(user string) order.Command {
		return order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 1, At: time.Now(), Cancel: &order.Cancel{OrderID: c.Checkout.OrderID, UserID: user}}
	}
	e.apply(cancel("someone else"))
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
		t.Fatalf("another user's cancel: %s", st)
	}
	res := e.apply(cancel("u1"))
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusCancelled || len(res.Orders) != 1 || res.Orders[0].Status != order.StatusCancelled {
		t.Errorf("status %s, result %+v", st, res.Orders)
	}
	if got := e.stock(sku); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v, want all back", got)
	}
	// A second cancel, and a release for the same order, change nothing.
	e.apply(cancel("u1"))
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindRelease, Partition: 1, At: time.Now(), Release: &order.Release{OrderID: c.Checkout.OrderID}})
	if got := e.stock(sku); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v after repeated cancel and release", got)
	}
	evs := e.deliver()
	var types []order.EventType
	for _, ev := range evs {
		if ev.Subject == c.Checkout.OrderID.String() {
			types = append(types, ev.Type)
		}
	}
	if diff := cmp.Diff([]order.EventType{order.EventConfirmed, order.EventCancelled}, types); diff != "" {
		t.Errorf("order events (-want +got):\n%s", diff)
	}
}

// ptMulti is an order with one line in each of partitions 0, 1 and 2, home
// 0.
func (e *ptEnv) multi(user string, skus [3]uuid.UUID, qty int) order.Command {
	return e.checkout(user, skus[0], qty, skus[1], qty, skus[2], qty)
}

func TestSagaConfirm(t *testing.T) {
	e := ptNew(t)
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
	c := e.multi("u1", skus, 2)
	c.Checkout.FromCart = true
	res := e.apply(c)
	if len(res.Orders) != 0 || len(res.Outcomes) != 1 || res.Outcomes[0].Status != order.StatusPending {
		t.Fatalf("home batch: orders %v outcomes %v, want the order pending and not cached", res.Orders, res.Outcomes)
	}
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusPending {
		t.Fatalf("status %s", st)
	}
	evs := e.deliver()
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
		t.Fatalf("status %s after the reservations, want confirmed", st)
	}
	for _, s := range skus {
		if got := e.stock(s); got != (ptStock{3, 2}) {
			t.Errorf("sku %s: %+v", s, got)
		}
	}
	var confirmed []order.Event
	for _, ev := range evs {
		if ev.Type == order.EventConfirmed {
			confirmed = append(confirmed, ev)
		}
	}
	if len(confirmed) != 1 {
		t.Fatalf("%d confirmed events", len(confirmed))
	}
	data, _ := json.Marshal(confirmed[0].Data)
	var o order.Order
	json.Unmarshal(data, &o)
	var got []uuid.UUID
	for _, l := range o.Lines {
		got = append(got, l.SKUID)
	}
	if diff := cmp.Diff(skus[:], got); diff != "" || o.Subtotal != 6000 {
		t.Errorf("confirmed lines (-want +got):\n%s subtotal %d", diff, o.Subtotal)
	}
	if n := e.count(`SELECT count(*) FROM reservations WHERE order_id = $1 AND status = 'confirmed'`, c.Checkout.OrderID); n != 3 {
		t.Errorf("%d confirmed reservations", n)
	}

	// Cancelling it gives back every partition's stock.
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 0, At: time.Now(), Cancel: &order.Cancel{OrderID: c.Checkout.OrderID, UserID: "u1"}})
	e.deliver()
	for _, s := range skus {
		if got := e.stock(s); got != (ptStock{5, 0}) {
			t.Errorf("after cancel, sku %s: %+v", s, got)
		}
	}
}

func TestSagaReject(t *testing.T) {
	e := ptNew(t)
	// Partition 2's SKU has too little: the order fails there, after
	// partitions 0 and 1 held their lines.
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 1)}
	c := e.multi("u1", skus, 2)
	e.apply(c)
	e.deliver()
	st, reason := e.status(c.Checkout.OrderID)
	if st != order.StatusRejected || reason != order.RejectOutOfStock {
		t.Errorf("status %s %s, want rejected out_of_stock", st, reason)
	}
	for i, s := range skus {
		want := ptStock{5, 0}
		if i == 2 {
			want = ptStock{1, 0}
		}
		if got := e.stock(s); got != want {
			t.Errorf("sku %d: %+v, want %+v (every stock as it was)", i, got, want)
		}
	}
	if n := e.count(`SELECT count(*) FROM reservations WHERE order_id = $1 AND status = 'held'`, c.Checkout.OrderID); n != 0 {
		t.Errorf("%d reservations still held", n)
	}
	// Failing at home: nothing is reserved anywhere.
	c2 := e.checkout("u2", skus[2], 5, skus[0], 1)
	e.apply(c2)
	if n := len(e.deliver()); n == 0 {
		t.Error("no event")
	}
	if st, _ := e.status(c2.Checkout.OrderID); st != order.StatusRejected {
		t.Errorf("home failure: %s", st)
	}
	if n := e.count(`SELECT count(*) FROM reservations WHERE order_id = $1`, c2.Checkout.OrderID); n != 0 {
		t.Errorf("home failure left %d reservations", n)
	}
}

// TestSagaCurrencyMismatch: each partition checks only its own lines'
// currency; the last reservation sees them all and refuses the mix.
func TestSagaCurrencyMismatch(t *testing.T) {
	e := ptNew(t)
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5, ptCurrency("USD")), e.sku(2, 5)}
	c := e.multi("u1", skus, 1)
	e.apply(c)
	e.deliver()
	if st, reason := e.status(c.Checkout.OrderID); st != order.StatusRejected || reason != order.RejectCurrencyMismatch {
		t.Errorf("status %s %s, want rejected currency_mismatch", st, reason)
	}
	for i, s := range skus {
		if got := e.stock(s); got != (ptStock{5, 0}) {
			t.Errorf("sku %d: %+v", i, got)
		}
	}
}

func TestSagaCancelPending(t *testing.T) {
	e := ptNew(t)
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
	c := e.multi("u1", skus, 1)
	e.apply(c)
	// Cancelled before the reserves arrive: they take nothing.
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 0, At: time.Now(), Cancel: &order.Cancel{OrderID: c.Checkout.OrderID, UserID: "u1"}})
	e.deliver()
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusCancelled {
		t.Errorf("status %s", st)
	}
	for i, s := range skus {
		if got := e.stock(s); got != (ptStock{5, 0}) {
			t.Errorf("sku %d: %+v", i, got)
		}
	}
	o, err := e.db.StoredOrderForTest(context.Background(), c.Checkout.OrderID)
	if err != nil || len(o.Lines) != 3 || o.Subtotal != 3000 {
		t.Errorf("cancelled order %+v %v, want its three lines", o, err)
	}
}

func TestSagaTimeout(t *testing.T) {
	e := ptNew(t)
	e.cfg.ReservationTimeout = time.Second
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
	c := e.multi("u1", skus, 1)
	e.apply(c)
	// Partition 1 reserves; partition 2 is down (its reserve waits).
	var late []postgres.OutboxRow
	for _, r := range e.outbox() {
		if r.Subject == order.Subject(1) {
			cs, _ := order.DecodeEnvelope(r.Payload, 1, ptParts)
			e.apply(cs...)
		}
		if r.Subject == order.Subject(2) {
			late = append(late, r)
		}
	}
	e.db.MustExec(`DELETE FROM outbox WHERE subject LIKE 'orders.cmd.%'`)
	if res, err := e.db.SweepReservations(context.Background(), e.cfg, 10); err != nil || len(res.Orders) != 0 {
		t.Fatalf("sweep before the deadline: %v %v", res, err)
	}
	time.Sleep(1100 * time.Millisecond)
	res, err := e.db.SweepReservations(context.Background(), e.cfg, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Orders) != 1 || res.Orders[0].RejectReason != order.RejectTimeout {
		t.Fatalf("swept %+v", res.Orders)
	}
	if diff := cmp.Diff([]uuid.UUID{skus[2]}, res.Orders[0].RejectSKUs); diff != "" {
		t.Errorf("reject skus (-want +got):\n%s", diff)
	}
	e.deliver() // the releases
	// Partition 2 comes back and applies its reserve: it takes nothing.
	cs, _ := order.DecodeEnvelope(late[0].Payload, 2, ptParts)
	e.apply(cs...)
	for i, s := range skus {
		if got := e.stock(s); got != (ptStock{5, 0}) {
			t.Errorf("sku %d: %+v", i, got)
		}
	}
	if res, _ := e.db.SweepReservations(context.Background(), e.cfg, 10); len(res.Orders) != 0 {
		t.Errorf("swept again: %+v", res.Orders)
	}
}

func TestRelayLock(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	a, err := e.db.TryRelayLock(ctx)
	if err != nil || a == nil {
		t.Fatalf("first lock: %v %v", a, err)
	}
	if b, err := e.db.TryRelayLock(ctx); err != nil || b != nil {
		t.Fatalf("second lock: %v %v, want none", b, err)
	}
	tx := e.db.MustBegin()
	if err := postgres.InsertOutbox(ctx, tx, []postgres.OutboxMessage{{"m1", "s1", []byte("a")}, {"m2", "s2", []byte("b")}, {"m1", "s1", []byte("dup")}}); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	rows, err := a.Pending(ctx, 10)
	if err != nil || len(rows) != 2 || rows[0].MsgID != "m1" || rows[1].MsgID != "m2" {
		t.Fatalf("pending %+v %v", rows, err)
	}
	if err := a.Delete(ctx, rows[:1]); err != nil {
		t.Fatal(err)
	}
	if n, _, err := e.db.OutboxBacklog(ctx); err != nil || n != 1 {
		t.Errorf("backlog %d %v", n, err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	b, err := e.db.TryRelayLock(ctx)
	if err != nil || b == nil {
		t.Fatalf("lock after release: %v %v", b, err)
	}
	b.Release()
}

// ptCancel is the cancel command the ingress sends for user's order id:
// its id derived from the order, as services/ingress/orders.go derives it.
func ptCancel(p int, id uuid.UUID, user string) order.Command {
	return order.Command{ID: uuid.NewSHA1(id, []byte("cancel")), Kind: order.KindCancel, Partition: p, At: time.Now(),
		Cancel: &order.Cancel{OrderID: id, UserID: user}}
}

// ptOrderEvents returns the types of the events of order id in evs.
func ptOrderEvents(evs []order.Event, id uuid.UUID) []order.EventType {
	var types []order.EventType
	for _, ev := range evs {
		if ev.Subject == id.String() {
			types = append(types, ev.Type)
		}
	}
	return types
}

// TestApplyBatchCancelBeforeCheckout: a cancel that reaches the partition
// before its checkout (the checkout's message was held by a killed worker
// and comes back after the ack wait, or is replayed from a dead letter)
// takes effect when the checkout arrives: the order is cancelled, takes no
// stock anywhere and announces it; retries of the cancel change nothing.
// A cancel by another user than the checkout's does not.
func TestApplyBatchCancelBeforeCheckout(t *testing.T) {
	t.Run("one partition", func(t *testing.T) {
		e := ptNew(t)
		sku := e.sku(1, 5)
		c := e.checkout("u1", sku, 2)
		id := c.Checkout.OrderID
		e.apply(ptCancel(1, id, "u1"))
		res := e.apply(c)
		if st, _ := e.status(id); st != order.StatusCancelled {
			t.Fatalf("checkout after its cancel: %s, want cancelled", st)
		}
		if len(res.Orders) != 1 || res.Orders[0].Status != order.StatusCancelled {
			t.Errorf("batch orders %+v, want the cancelled order for the status cache", res.Orders)
		}
		if got := e.stock(sku); got != (ptStock{5, 0}) {
			t.Errorf("stock %+v, want none taken", got)
		}
		// The cancel again (a retry), a release and the checkout again
		// change nothing.
		e.apply(ptCancel(1, id, "u1"))
		e.apply(order.Command{ID: uuid.New(), Kind: order.KindRelease, Partition: 1, At: time.Now(), Release: &order.Release{OrderID: id}})
		e.apply(c)
		if got := e.stock(sku); got != (ptStock{5, 0}) {
			t.Errorf("stock %+v after retries", got)
		}
		o, err := e.db.StoredOrderForTest(context.Background(), id)
		if err != nil || o == nil || len(o.Lines) != 1 || o.Subtotal != 2000 {
			t.Errorf("cancelled order %+v %v, want its line priced", o, err)
		}
		if diff := cmp.Diff([]order.EventType{order.EventCancelled}, ptOrderEvents(e.deliver(), id)); diff != "" {
			t.Errorf("order events (-want +got):\n%s", diff)
		}
	})
	t.Run("one batch", func(t *testing.T) {
		e := ptNew(t)
		sku := e.sku(1, 5)
		c := e.checkout("u1", sku, 2)
		e.apply(ptCancel(1, c.Checkout.OrderID, "u1"), c)
		if st, _ := e.status(c.Checkout.OrderID); st != order.StatusCancelled {
			t.Errorf("checkout after its cancel in one batch: %s, want cancelled", st)
		}
		if got := e.stock(sku); got != (ptStock{5, 0}) {
			t.Errorf("stock %+v, want none taken", got)
		}
	})
	t.Run("saga", func(t *testing.T) {
		e := ptNew(t)
		skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
		c := e.multi("u1", skus, 1)
		e.apply(ptCancel(0, c.Checkout.OrderID, "u1"))
		e.apply(c)
		evs := e.deliver()
		if st, _ := e.status(c.Checkout.OrderID); st != order.StatusCancelled {
			t.Errorf("status %s, want cancelled", st)
		}
		for i, s := range skus {
			if got := e.stock(s); got != (ptStock{5, 0}) {
				t.Errorf("sku %d: %+v, want none taken", i, got)
			}
		}
		if diff := cmp.Diff([]order.EventType{order.EventCancelled}, ptOrderEvents(evs, c.Checkout.OrderID)); diff != "" {
			t.Errorf("order events (-want +got):\n%s", diff)
		}
		// A release reaching any partition of it finds nothing to give back.
		for p := range 3 {
			e.apply(order.Command{ID: uuid.New(), Kind: order.KindRelease, Partition: p, At: time.Now(), Release: &order.Release{OrderID: c.Checkout.OrderID}})
		}
		for i, s := range skus {
			if got := e.stock(s); got != (ptStock{5, 0}) {
				t.Errorf("after releases, sku %d: %+v", i, got)
			}
		}
	})
	t.Run("dead letter", func(t *testing.T) {
		// The checkout became a dead letter after its cancel came: its
		// order is rejected then, and a replay of the checkout changes
		// nothing and forgets the tombstone.
		e := ptNew(t)
		sku := e.sku(1, 5)
		c := e.checkout("u1", sku, 2)
		e.apply(ptCancel(1, c.Checkout.OrderID, "u1"))
		payload, _ := order.EncodeEnvelope(c)
		if _, err := e.db.RecordDead(context.Background(), &postgres.DeadLetter{SourceKey: "seq-1", Partition: 1, Subject: "orders.cmd.1", Reason: postgres.DeadMaxDeliveries, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		e.apply(c)
		if st, reason := e.status(c.Checkout.OrderID); st != order.StatusRejected || reason != order.RejectProcessingFailed {
			t.Errorf("status %s %s, want rejected processing_failed", st, reason)
		}
		if got := e.stock(sku); got != (ptStock{5, 0}) {
			t.Errorf("stock %+v, want none taken", got)
		}
		if n := e.count(`SELECT count(*) FROM cancel_tombstones`); n != 0 {
			t.Errorf("%d tombstones left", n)
		}
	})
	t.Run("another user", func(t *testing.T) {
		e := ptNew(t)
		sku := e.sku(1, 5)
		c := e.checkout("u1", sku, 2)
		e.apply(order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 1, At: time.Now(), Cancel: &order.Cancel{OrderID: c.Checkout.OrderID, UserID: "u2"}})
		e.apply(c)
		if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
			t.Errorf("after another user's cancel: %s, want confirmed", st)
		}
	})
}

// TestApplyBatchCancelRacesCheckout: a second writer (a pin takeover)
// applies an order's cancel while the first is writing the order's
// checkout, after it looked for tombstones and before it commits. The
// cancel must not be remembered for a checkout that is already past
// looking: the order ends cancelled, its stock given back.
func TestApplyBatchCancelRacesCheckout(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(1, 5)
	c := e.checkout("u1", sku, 2)
	id := c.Checkout.OrderID

	// Hold the checkout at its INSERT of the order: another transaction
	// holds its order number, uncommitted.
	blocker := e.db.MustBegin()
	defer blocker.Rollback()
	if _, err := blocker.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, home_partition, accepted_at)
		VALUES ($1, $2, 'u1', $3, 'card', 'pending', 1, now())`, uuid.New(), c.Checkout.OrderNumber, c.Checkout.AddressID); err != nil {
		t.Fatal(err)
	}
	waiting := func() int {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
	}
	applyRetrying := func(cmd order.Command) <-chan error {
		done := make(chan error, 1)
		go func() {
			for {
				_, err := e.db.ApplyBatch(ctx, 1, []order.Command{cmd}, e.cfg)
				if !errors.Is(err, postgres.ErrBatchConflict) {
					done <- err
					return
				}
			}
		}()
		return done
	}
	checkoutDone := applyRetrying(c)
	for deadline := time.Now().Add(10 * time.Second); waiting() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the checkout never waited on the held order number")
		}
	}
	cancelDone := applyRetrying(ptCancel(1, id, "u1"))
	var cancelErr error
	cancelFinished := false
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && waiting() < 2; time.Sleep(10 * time.Millisecond) {
		select {
		case cancelErr = <-cancelDone:
			cancelFinished = true
		default:
			continue
		}
		break
	}
	blocker.Rollback()
	if err := <-checkoutDone; err != nil {
		t.Fatalf("checkout: %v", err)
	}
	if !cancelFinished {
		cancelErr = <-cancelDone
	}
	if cancelErr != nil {
		t.Fatalf("cancel: %v", cancelErr)
	}
	if st, _ := e.status(id); st != order.StatusCancelled {
		t.Errorf("status %s, want cancelled", st)
	}
	if got := e.stock(sku); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v, want all back", got)
	}
}
