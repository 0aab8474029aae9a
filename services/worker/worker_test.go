package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// users returns n user ids with an address each.
func (e *env) users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	e.addresses(out)
	return out
}

// outcomes counts the orders of ids by status and reason.
func (e *env) outcomes(ids []uuid.UUID) map[string]int {
	e.t.Helper()
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	rows, err := e.db.Query(`SELECT status || '/' || coalesce(reject_reason, ''), count(*) FROM orders
		WHERE id = ANY($1::uuid[]) GROUP BY 1`, pq.Array(strs))
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		rows.Scan(&k, &n)
		out[k] = n
	}
	return out
}

// checkCache checks that the status cache holds each order's status.
func (e *env) checkCache(ids []uuid.UUID) {
	e.t.Helper()
	bad := 0
	for _, id := range ids {
		want, _ := e.status(id)
		got, err := e.rs.OrderStatus(context.Background(), id)
		if err != nil || got.Status != want {
			if bad++; bad <= 3 {
				e.t.Errorf("cached order %s: %v %v, want %s", id, got, err, want)
			}
		}
	}
}

func TestHotSKU(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(2, 100, 0)
	var cmds []order.Command
	for _, u := range e.users("u", 1000) {
		cmds = append(cmds, e.checkout(u, sku, 1))
	}
	e.start(e.worker("w1"))
	start := time.Now()
	e.publish(32, cmds...)
	ids := orderIDs(cmds)
	e.waitFinal(ids, 60*time.Second)
	t.Logf("1000 checkouts published and decided in %v", time.Since(start))

	if diff := cmp.Diff(map[string]int{"confirmed/": 100, "rejected/out_of_stock": 900}, e.outcomes(ids)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if got := e.stock(sku); got != (stock{0, 100}) {
		t.Errorf("stock %+v, want 0 left and 100 sold", got)
	}
	evs := e.events()
	dec := decisions(t, evs)
	if len(dec) != 1000 {
		t.Errorf("decision events for %d orders, want 1000", len(dec))
	}
	for id, n := range dec {
		if n != 1 {
			t.Errorf("order %s has %d decision events", id, n)
		}
	}
	validateEvents(t, evs)
	e.checkCache(ids)
}

// TestTwoWorkersOneStops runs two worker processes on the same partitions
// and stops one in the middle of the sale: its partitions move to the
// other, and the result is still exact.
func TestTwoWorkersOneStops(t *testing.T) {
	e := newEnv(t, 4)
	a, b := e.sku(0, 300, 0), e.sku(3, 300, 0)
	var cmds []order.Command
	for i, u := range e.users("u", 1200) {
		sku := a
		if i%2 == 1 {
			sku = b
		}
		cmds = append(cmds, e.checkout(u, sku, 1))
	}
	ids := orderIDs(cmds)
	stop1 := e.start(e.worker("w1"))
	time.Sleep(200 * time.Millisecond) // w1 takes the pins first
	e.start(e.worker("w2"))

	done := make(chan struct{})
	go func() {
		defer close(done)
		e.publish(16, cmds...)
	}()
	for e.count(`SELECT count(*) FROM orders`) < 300 {
		time.Sleep(5 * time.Millisecond)
	}
	stopped := time.Now()
	stop1()
	t.Logf("w1 stopped (drained) in %v with %d orders decided", time.Since(stopped), e.count(`SELECT count(*) FROM orders`))
	<-done
	e.waitFinal(ids, 60*time.Second)

	if diff := cmp.Diff(map[string]int{"confirmed/": 600, "rejected/out_of_stock": 600}, e.outcomes(ids)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	for _, s := range []uuid.UUID{a, b} {
		if got := e.stock(s); got != (stock{0, 300}) {
			t.Errorf("sku %s: %+v", s, got)
		}
	}
	dec := decisions(t, e.events())
	for _, id := range ids {
		if dec[id.String()] != 1 {
			t.Errorf("order %s has %d decision events", id, dec[id.String()])
		}
	}
}

// TestDeadWorker cuts a worker off NATS in the middle of the sale, without
// unpinning (as if it was killed): its partitions move to the other worker
// when the pin expires, its unacked commands come back after the ack wait,
// and the result is still exact.
func TestDeadWorker(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(1, 200, 0)
	var cmds []order.Command
	for _, u := range e.users("u", 800) {
		cmds = append(cmds, e.checkout(u, sku, 1))
	}
	ids := orderIDs(cmds)
	// w1 on a connection of its own, so that it can die alone.
	nc, err := nats.Connect(e.nc.ConnectedUrl(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	js1, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w1 := e.worker("w1")
	w1.d.NC, w1.d.JS = nc, js1
	e.start(w1)
	time.Sleep(200 * time.Millisecond) // w1 takes the pins first
	e.start(e.worker("w2"))

	done := make(chan struct{})
	go func() {
		defer close(done)
		e.publish(16, cmds...)
	}()
	for e.count(`SELECT count(*) FROM orders`) < 200 {
		time.Sleep(5 * time.Millisecond)
	}
	died := time.Now()
	nc.Close()
	<-done
	for e.count(`SELECT count(*) FROM orders WHERE status <> 'pending'`) < len(ids) {
		time.Sleep(10 * time.Millisecond)
	}
	decided := time.Since(died)
	e.waitFinal(ids, 60*time.Second)
	t.Logf("after w1 died: all decided in %v, all events published in %v", decided.Round(time.Millisecond), time.Since(died).Round(time.Millisecond))
	if diff := cmp.Diff(map[string]int{"confirmed/": 200, "rejected/out_of_stock": 600}, e.outcomes(ids)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if got := e.stock(sku); got != (stock{0, 200}) {
		t.Errorf("stock %+v", got)
	}
	dec := decisions(t, e.events())
	for _, id := range ids {
		if dec[id.String()] != 1 {
			t.Errorf("order %s has %d decision events", id, dec[id.String()])
		}
	}
}

// TestWorkerWithoutDatabase: a worker that cannot reach PostgreSQL (while
// another can) hands its partitions over instead of holding them hostage.
func TestWorkerWithoutDatabase(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(0, 50, 0)
	var cmds []order.Command
	for _, u := range e.users("u", 100) {
		cmds = append(cmds, e.checkout(u, sku, 1))
	}
	bad, err := sqlx.Open("postgres", "postgres://orderd:orderd@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bad.Close() })
	w1 := e.worker("w1")
	w1.d.DB = &postgres.DB{DB: bad}
	w1.d.DatabaseURL = ""
	e.start(w1)
	time.Sleep(200 * time.Millisecond) // w1 takes the pins first
	e.start(e.worker("w2"))
	start := time.Now()
	e.publish(8, cmds...)
	e.waitFinal(orderIDs(cmds), 30*time.Second)
	t.Logf("decided in %v", time.Since(start).Round(time.Millisecond))
	if diff := cmp.Diff(map[string]int{"confirmed/": 50, "rejected/out_of_stock": 50}, e.outcomes(orderIDs(cmds))); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

// TestRedelivery: a command whose transaction committed but whose message
// was not acked (the worker died) comes back: nothing changes twice, and
// the worker redoes the status cache.
func TestRedelivery(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(1, 10, 0)
	c := e.checkout("u1", sku, 1)
	c.Checkout.FromCart = true
	ctx := context.Background()
	if err := e.rs.SetCartItem(ctx, "u1", sku, 1); err != nil {
		t.Fatal(err)
	}
	// The first delivery's transaction, committed by a worker that died
	// before caching and acking.
	if _, err := e.db.ApplyBatch(ctx, c.Partition, []order.Command{c}, postgres.PartitionConfig{Partitions: e.parts}); err != nil {
		t.Fatal(err)
	}
	// The same envelope, delivered twice more (beyond the dedupe window:
	// different message ids).
	data, _ := order.EncodeEnvelope(c)
	for _, id := range []string{"first", "second"} {
		if _, err := e.js.Publish(ctx, order.Subject(c.Partition), data, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	e.start(e.worker("w"))
	e.waitFinal([]uuid.UUID{c.Checkout.OrderID}, 20*time.Second)
	waitDrained(t, e, c.Partition)

	if got := e.stock(sku); got != (stock{9, 1}) {
		t.Errorf("stock %+v, want one unit taken once", got)
	}
	if n := e.count(`SELECT count(*) FROM processed_commands`); n != 1 {
		t.Errorf("%d processed commands", n)
	}
	if dec := decisions(t, e.events()); dec[c.Checkout.OrderID.String()] != 1 || len(dec) != 1 {
		t.Errorf("decision events %v", dec)
	}
	e.checkCache([]uuid.UUID{c.Checkout.OrderID})
	if cart, _ := e.rs.Cart(ctx, "u1"); len(cart) != 0 {
		t.Errorf("cart %v, want the purchased SKU removed by the redelivery", cart)
	}
}

// waitDrained waits until partition p's consumer holds no message.
func waitDrained(t *testing.T, e *env, p int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := e.js.Consumer(ctx, natsbus.CommandStream, natsbus.PartitionConsumerName(p))
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d's consumer still holds messages", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitQuiet waits until no command is in flight anywhere: the outbox is
// empty and every partition consumer is drained, twice in a row.
func waitQuiet(t *testing.T, e *env) {
	t.Helper()
	for range 2 {
		deadline := time.Now().Add(20 * time.Second)
		for e.count(`SELECT count(*) FROM outbox`) > 0 {
			if time.Now().After(deadline) {
				t.Fatal("outbox not empty")
			}
			time.Sleep(20 * time.Millisecond)
		}
		for p := range e.parts {
			waitDrained(t, e, p)
		}
	}
}

// fakeMsg is a JetStream message handed to a partition loop directly, to
// run two loops on one partition at once (bypassing the pin).
type fakeMsg struct {
	data    []byte
	subject string
	acks    atomic.Int32
	naks    atomic.Int32
	terms   atomic.Int32
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1}, nil
}
func (m *fakeMsg) Data() []byte                     { return m.data }
func (m *fakeMsg) Headers() nats.Header             { return nats.Header{} }
func (m *fakeMsg) Subject() string                  { return m.subject }
func (m *fakeMsg) Reply() string                    { return "" }
func (m *fakeMsg) Ack() error                       { m.acks.Add(1); return nil }
func (m *fakeMsg) DoubleAck(context.Context) error  { m.acks.Add(1); return nil }
func (m *fakeMsg) Nak() error                       { m.naks.Add(1); return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error { m.naks.Add(1); return nil }
func (m *fakeMsg) InProgress() error                { return nil }
func (m *fakeMsg) Term() error                      { m.terms.Add(1); return nil }
func (m *fakeMsg) TermWithReason(string) error      { m.terms.Add(1); return nil }
func (m *fakeMsg) String() string                   { return m.subject }
func (m *fakeMsg) settled() (int32, int32, int32) {
	return m.acks.Load(), m.naks.Load(), m.terms.Load()
}
func newFakeMsg(t *testing.T, cmds ...order.Command) *fakeMsg {
	data, err := order.EncodeEnvelope(cmds...)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeMsg{data: data, subject: order.Subject(cmds[0].Partition)}
}

// TestSecondWriter runs two partition loops on the same partition at once,
// as two workers during a pin takeover, each offered every command (in
// different batches): nothing is oversold, applied twice or rejected while
// stock remains.
func TestSecondWriter(t *testing.T) {
	e := newEnv(t, 8)
	const p = 5
	hot := e.sku(p, 100, 0)
	limited := e.sku(p, 1000, 3)
	var msgs []*fakeMsg
	var ids []uuid.UUID
	users := e.users("u", 100)
	for i := range 400 {
		u := users[i%100]
		c1, c2 := e.checkout(u, hot, 1), e.checkout(u, limited, 1)
		ids = append(ids, c1.Checkout.OrderID, c2.Checkout.OrderID)
		msgs = append(msgs, newFakeMsg(t, c1, c2))
	}
	w1, w2 := e.worker("w1", func(c *Config) { c.BatchSize = 20 }), e.worker("w2", func(c *Config) { c.BatchSize = 33 })
	var wg sync.WaitGroup
	for _, w := range []*Worker{w1, w2} {
		wg.Go(func() {
			l := newPartitionLoop(w, p, nil)
			ctx := context.Background()
			for i := 0; i < len(msgs); i += 25 {
				batch := make([]jetstream.Msg, 0, 25)
				for _, m := range msgs[i:min(i+25, len(msgs))] {
					batch = append(batch, m)
				}
				l.process(ctx, ctx, batch)
			}
		})
	}
	wg.Wait()
	for i, m := range msgs {
		if a, n, tm := m.settled(); a != 2 || n != 0 || tm != 0 {
			t.Errorf("message %d: %d acks %d naks %d terms, want one ack from each writer", i, a, n, tm)
		}
	}
	if got := e.stock(hot); got != (stock{0, 100}) {
		t.Errorf("hot sku %+v, want 0 left and 100 sold", got)
	}
	if got := e.stock(limited); got != (stock{700, 300}) {
		t.Errorf("limited sku %+v, want 3 per user (100 users)", got)
	}
	want := map[string]int{"confirmed/": 400, "rejected/out_of_stock": 300, "rejected/limit_exceeded": 100}
	if diff := cmp.Diff(want, e.outcomes(ids)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE subject LIKE 'orders.events.order.%'`); n != 800 {
		t.Errorf("%d order events in the outbox, want one per order (800)", n)
	}
	t.Logf("conflicts retried: %v and %v", testutil.ToFloat64(w1.m.conflicts), testutil.ToFloat64(w2.m.conflicts))
}

// TestPerUserLimit sends each user's checkouts concurrently, through two
// workers: nobody holds more than the limit.
func TestPerUserLimit(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(1, 1000, 2)
	var cmds []order.Command
	for _, u := range e.users("u", 50) {
		for range 5 {
			cmds = append(cmds, e.checkout(u, sku, 1))
		}
	}
	e.start(e.worker("w1"))
	e.start(e.worker("w2"))
	e.publish(25, cmds...)
	ids := orderIDs(cmds)
	e.waitFinal(ids, 30*time.Second)
	if diff := cmp.Diff(map[string]int{"confirmed/": 100, "rejected/limit_exceeded": 150}, e.outcomes(ids)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if n := e.count(`SELECT count(*) FROM (SELECT o.user_id FROM orders o JOIN order_lines l ON l.order_id = o.id
		WHERE o.status = 'confirmed' GROUP BY 1 HAVING sum(l.quantity) <> 2) x`); n != 0 {
		t.Errorf("%d users do not hold exactly the limit", n)
	}
	if got := e.stock(sku); got != (stock{900, 100}) {
		t.Errorf("stock %+v", got)
	}
}

func TestMultiPartitionConfirm(t *testing.T) {
	e := newEnv(t, 4)
	a, b, c := e.sku(0, 5, 0), e.sku(1, 5, 0), e.sku(3, 5, 0)
	ctx := context.Background()
	for _, s := range []uuid.UUID{a, b, c} {
		e.rs.SetCartItem(ctx, "u1", s, 2)
	}
	other := e.skuIn(2)
	e.rs.SetCartItem(ctx, "u1", other, 1)
	cmd := e.checkout("u1", b, 2, a, 2, c, 2)
	cmd.Checkout.FromCart = true
	e.start(e.worker("w"))
	e.publish(1, cmd)
	e.waitFinal([]uuid.UUID{cmd.Checkout.OrderID}, 20*time.Second)
	waitQuiet(t, e)

	if st, _ := e.status(cmd.Checkout.OrderID); st != order.StatusConfirmed {
		t.Fatalf("status %s", st)
	}
	for _, s := range []uuid.UUID{a, b, c} {
		if got := e.stock(s); got != (stock{3, 2}) {
			t.Errorf("sku %s: %+v", s, got)
		}
	}
	evs := e.events()
	validateEvents(t, evs)
	var o order.Order
	for _, ev := range evs {
		if ev.Type == order.EventConfirmed {
			o = ev.orderOf(t)
		}
	}
	var lines []uuid.UUID
	for _, l := range o.Lines {
		lines = append(lines, l.SKUID)
	}
	if diff := cmp.Diff([]uuid.UUID{b, a, c}, lines); diff != "" || o.GrandTotal != 7000 || o.Status != order.StatusConfirmed {
		t.Errorf("confirmed order %+v, lines (-want +got):\n%s", o, diff)
	}
	e.checkCache([]uuid.UUID{cmd.Checkout.OrderID})
	cart, _ := e.rs.Cart(ctx, "u1")
	if diff := cmp.Diff(map[uuid.UUID]int64{other: 1}, cart); diff != "" {
		t.Errorf("cart (-want +got):\n%s", diff)
	}
}

func TestMultiPartitionReject(t *testing.T) {
	e := newEnv(t, 4)
	a, b, c := e.sku(0, 5, 0), e.sku(1, 5, 0), e.sku(3, 1, 0)
	cmd := e.checkout("u1", a, 2, b, 2, c, 2) // c has too little
	e.start(e.worker("w"))
	e.publish(1, cmd)
	e.waitFinal([]uuid.UUID{cmd.Checkout.OrderID}, 20*time.Second)
	waitQuiet(t, e)

	st, reason := e.status(cmd.Checkout.OrderID)
	if st != order.StatusRejected || reason != order.RejectOutOfStock {
		t.Errorf("status %s %s", st, reason)
	}
	for s, want := range map[uuid.UUID]stock{a: {5, 0}, b: {5, 0}, c: {1, 0}} {
		if got := e.stock(s); got != want {
			t.Errorf("sku %s: %+v, want %+v (as it was)", s, got, want)
		}
	}
	if n := e.count(`SELECT count(*) FROM reservations WHERE status IN ('held', 'confirmed')`); n != 0 {
		t.Errorf("%d reservations still hold stock", n)
	}
	evs := e.events()
	validateEvents(t, evs)
	if dec := decisions(t, evs); dec[cmd.Checkout.OrderID.String()] != 1 {
		t.Errorf("decision events %v", dec)
	}
}

// TestReservationTimeout: a partition that does not answer in time makes
// the order rejected, and what others held comes back.
func TestReservationTimeout(t *testing.T) {
	e := newEnv(t, 4)
	a, b := e.sku(0, 5, 0), e.sku(1, 5, 0)
	// Partition 1's consumer exists but no worker serves it: the worker
	// below only runs partition 0 (Partitions stays 4 for the hashing).
	cmd := e.checkout("u1", a, 1, b, 1)
	w := e.worker("w", func(c *Config) { c.ReservationTimeout = 500 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cons, err := natsbus.EnsurePartitionConsumers(ctx, e.js, e.parts, natsbus.ConsumerSettings{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { newPartitionLoop(w, 0, cons[0]).run(ctx) })
	wg.Go(func() { w.sweep(ctx) })
	wg.Go(func() { w.relay.run(ctx) })
	e.publish(1, cmd)
	e.waitStatus(cmd.Checkout.OrderID, order.StatusRejected, 10*time.Second)
	if _, reason := e.status(cmd.Checkout.OrderID); reason != order.RejectTimeout {
		t.Errorf("reason %s", reason)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.stock(a) != (stock{5, 0}) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := e.stock(a); got != (stock{5, 0}) {
		t.Errorf("home sku %+v, want released", got)
	}
	cancel()
	wg.Wait()

	// Partition 1 comes back late: its reserve takes nothing.
	e.start(e.worker("w2"))
	waitQuiet(t, e)
	if got := e.stock(b); got != (stock{5, 0}) {
		t.Errorf("late partition's sku %+v, want untouched", got)
	}
	validateEvents(t, e.events())
}

func TestCancelRestocks(t *testing.T) {
	e := newEnv(t, 4)
	one := e.sku(2, 5, 0)
	a, b := e.sku(0, 5, 0), e.sku(3, 5, 0)
	single, multi := e.checkout("u1", one, 2), e.checkout("u2", a, 1, b, 3)
	e.start(e.worker("w"))
	e.publish(2, single, multi)
	ids := orderIDs([]order.Command{single, multi})
	e.waitFinal(ids, 20*time.Second)
	waitQuiet(t, e)
	if got := e.stock(one); got != (stock{3, 2}) {
		t.Fatalf("before cancel: %+v", got)
	}
	e.publish(2, e.cancel(single), e.cancel(multi))
	e.waitStatus(single.Checkout.OrderID, order.StatusCancelled, 10*time.Second)
	e.waitStatus(multi.Checkout.OrderID, order.StatusCancelled, 10*time.Second)
	waitQuiet(t, e)
	for _, s := range []uuid.UUID{one, a, b} {
		if got := e.stock(s); got != (stock{5, 0}) {
			t.Errorf("sku %s after cancel: %+v", s, got)
		}
	}
	evs := e.events()
	validateEvents(t, evs)
	var seq []string
	for _, ev := range evs {
		if ev.Subject == single.Checkout.OrderID.String() {
			seq = append(seq, string(ev.Type))
		}
	}
	if diff := cmp.Diff([]string{"order.confirmed", "order.cancelled"}, seq); diff != "" {
		t.Errorf("events of the cancelled order (-want +got):\n%s", diff)
	}
	e.checkCache(ids)
}

func TestRestock(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(1, 0, 0)
	e.start(e.worker("w"))
	buyer := e.checkout("u1", sku, 1)
	e.publish(1, buyer)
	e.waitFinal(orderIDs([]order.Command{buyer}), 10*time.Second)
	restock := order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 1, At: time.Now(), Restock: &order.Restock{SKUID: sku, Quantity: 4}}
	e.publish(1, restock, restock) // the second is a duplicate
	waitQuiet(t, e)
	if got := e.stock(sku); got != (stock{4, 0}) {
		t.Errorf("stock %+v", got)
	}
	again := e.checkout("u2", sku, 4)
	e.publish(1, again)
	e.waitFinal(orderIDs([]order.Command{again}), 10*time.Second)
	if st, _ := e.status(again.Checkout.OrderID); st != order.StatusConfirmed {
		t.Errorf("after restock: %s", st)
	}
	evs := e.events()
	validateEvents(t, evs)
	var deltas []int64
	for _, ev := range evs {
		if ev.Type == order.EventStockChanged {
			var sc struct {
				Delta int64 `json:"delta"`
			}
			if err := json.Unmarshal(ev.data, &sc); err != nil {
				t.Fatal(err)
			}
			deltas = append(deltas, sc.Delta)
		}
	}
	if diff := cmp.Diff([]int64{4, -4}, deltas); diff != "" {
		t.Errorf("stock.changed deltas (-want +got):\n%s", diff)
	}
}

func TestPoisonMessage(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(1, 10, 0)
	ctx := context.Background()
	e.start(e.worker("w"))
	// Garbage, an envelope of another partition, a command naming an
	// address that does not exist, then good commands.
	e.js.Publish(ctx, order.Subject(1), []byte("not json"))
	other := e.checkout("u1", sku, 1)
	other.Partition = 2
	data, _ := order.EncodeEnvelope(other)
	e.js.Publish(ctx, order.Subject(1), data)
	bad := e.checkout("u2", sku, 1)
	bad.Checkout.AddressID = uuid.New()
	good := e.checkout("u3", sku, 1)
	mixed, _ := order.EncodeEnvelope(bad, good) // only the bad command is dropped
	e.js.Publish(ctx, order.Subject(1), mixed)
	invalid := e.checkout("u4", sku, 1)
	invalid.Checkout.PaymentMethod = "barter"
	good2 := e.checkout("u5", sku, 1)
	mixed2, _ := order.EncodeEnvelope(good2, invalid) // the envelope fails validation, good2 is kept
	e.js.Publish(ctx, order.Subject(1), mixed2)
	var cmds []order.Command
	for i := range 5 {
		cmds = append(cmds, e.checkout(fmt.Sprintf("v%d", i), sku, 1))
	}
	e.publish(1, cmds...)
	e.waitFinal(append(orderIDs(cmds), good.Checkout.OrderID, good2.Checkout.OrderID), 10*time.Second)
	waitDrained(t, e, 1)
	if got := e.stock(sku); got != (stock{3, 7}) {
		t.Errorf("stock %+v", got)
	}
	st, err := e.js.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 0 {
		t.Errorf("%d messages left in the work queue", info.State.Msgs)
	}
	for _, c := range []order.Command{bad, invalid} {
		if st, _ := e.status(c.Checkout.OrderID); st != "" {
			t.Errorf("poison order written: %s", st)
		}
	}
}

// TestRelayCrash makes the relay die after publishing and before deleting
// what it published, twice, and has a second relay take over: every event
// is in the stream exactly once, and each order's events in order.
func TestRelayCrash(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(2, 30, 0)
	cfg := postgres.PartitionConfig{Partitions: e.parts}
	ctx := context.Background()
	var all []order.Command
	for i := range 30 {
		c := e.checkout(fmt.Sprintf("u%d", i), sku, 1)
		all = append(all, c)
		if _, err := e.db.ApplyBatch(ctx, 2, []order.Command{c}, cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range all[:10] {
		if _, err := e.db.ApplyBatch(ctx, 2, []order.Command{e.cancel(c)}, cfg); err != nil {
			t.Fatal(err)
		}
	}
	rows := e.count(`SELECT count(*) FROM outbox`)

	w1, w2 := e.worker("w1"), e.worker("w2")
	var crashes atomic.Int32
	w1.relay.afterPublish = func() error {
		if crashes.Add(1) <= 2 {
			return errors.New("crash between publish and delete")
		}
		return nil
	}
	ctx1, stop1 := context.WithCancel(ctx)
	ctx2, stop2 := context.WithCancel(ctx)
	defer stop2()
	var wg sync.WaitGroup
	wg.Go(func() { w1.relay.run(ctx1) })
	// Wait until w1 crashed twice, then start w2 and kill w1 for good: w2
	// takes over.
	for crashes.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	wg.Go(func() { w2.relay.run(ctx2) })
	stop1()
	deadline := time.Now().Add(20 * time.Second)
	for e.count(`SELECT count(*) FROM outbox`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("outbox not relayed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop2()
	wg.Wait()

	evs := e.events()
	if len(evs) != rows {
		t.Errorf("%d events in the stream, want %d (one per outbox row)", len(evs), rows)
	}
	seen := map[uuid.UUID]bool{}
	perOrder := map[string][]order.EventType{}
	for _, ev := range evs {
		if seen[ev.ID] {
			t.Errorf("event %s twice", ev.ID)
		}
		seen[ev.ID] = true
		if ev.Type != order.EventStockChanged {
			perOrder[ev.Subject] = append(perOrder[ev.Subject], ev.Type)
		}
	}
	for i, c := range all {
		want := []order.EventType{order.EventConfirmed}
		if i < 10 {
			want = append(want, order.EventCancelled)
		}
		if got := perOrder[c.Checkout.OrderID.String()]; !slices.Equal(got, want) {
			t.Errorf("order %d events %v, want %v", i, got, want)
		}
	}
	validateEvents(t, evs)
}

// TestThroughput measures how fast one worker decides a queue of 10,000
// hot-SKU checkouts (published before it starts): as the ingress publishes
// them under load (natsbus.BatchPublisher packs concurrent commands into one
// message), and one command per message. The second is bound by JetStream,
// not by the worker: in a work-queue stream with sync_interval always, every
// ack deletes a message with an fsync (a few thousand a second).
func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput")
	}
	for _, batched := range []bool{true, false} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			e := newEnv(t, 8)
			sku := e.sku(3, 2000, 0)
			var cmds []order.Command
			for _, u := range e.users("u", 10000) {
				cmds = append(cmds, e.checkout(u, sku, 1))
			}
			if batched {
				bp := natsbus.NewBatchPublisher(e.js, natsbus.BatchConfig{Partitions: e.parts})
				ch := make(chan order.Command)
				var wg sync.WaitGroup
				for range 512 {
					wg.Go(func() {
						for c := range ch {
							if err := bp.Publish(context.Background(), c); err != nil {
								t.Error(err)
							}
						}
					})
				}
				for _, c := range cmds {
					ch <- c
				}
				close(ch)
				wg.Wait()
				bp.Close()
			} else {
				e.publishAsync(cmds)
			}
			st, _ := e.js.Stream(context.Background(), natsbus.CommandStream)
			info, _ := st.Info(context.Background())
			ids := orderIDs(cmds)
			start := time.Now()
			e.start(e.worker("w"))
			deadline := time.Now().Add(120 * time.Second)
			for e.count(`SELECT count(*) FROM orders WHERE status <> 'pending'`) < len(cmds) {
				if time.Now().After(deadline) {
					t.Fatal("not decided in time")
				}
				time.Sleep(10 * time.Millisecond)
			}
			decided := time.Since(start)
			e.waitFinal(ids, 60*time.Second)
			relayed := time.Since(start)
			t.Logf("10000 hot-SKU checkouts in %d messages: decided in %v (%.0f orders/s); all events relayed after %v (%.0f orders/s)",
				info.State.Msgs, decided.Round(time.Millisecond), float64(len(cmds))/decided.Seconds(), relayed.Round(time.Millisecond), float64(len(cmds))/relayed.Seconds())
			if diff := cmp.Diff(map[string]int{"confirmed/": 2000, "rejected/out_of_stock": 8000}, e.outcomes(ids)); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			if got := e.stock(sku); got != (stock{0, 2000}) {
				t.Errorf("stock %+v", got)
			}
		})
	}
}
