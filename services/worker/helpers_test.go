package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// env is one test's real PostgreSQL database, NATS server with the streams,
// and Redis prefix.
type env struct {
	t     *testing.T
	parts int
	dsn   string
	db    *postgres.DB
	nc    *nats.Conn
	js    jetstream.JetStream
	rs    *redisstore.Store
	pub   *natsbus.Publisher

	mu    sync.Mutex
	addrs map[string]uuid.UUID
	seq   int64
}

func newEnv(t *testing.T, parts int) *env {
	t.Helper()
	dsn, db := pgtest.New(t)
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	rs, _ := redistest.New(t)
	return &env{t: t, parts: parts, dsn: dsn, db: db, nc: nc, js: js, rs: rs, pub: natsbus.NewPublisher(js), addrs: map[string]uuid.UUID{}}
}

// testLog logs to the test's output when -v, at Info.
func testLog(t *testing.T) *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() || os.Getenv("WORKER_TEST_LOG") != "" {
		w = tWriter{t}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// worker builds a worker on the env with test-friendly timings.
func (e *env) worker(name string, mut ...func(*Config)) *Worker {
	e.t.Helper()
	cfg := Config{Name: name, Partitions: e.parts, PinnedTTL: 2 * time.Second, AckWait: 5 * time.Second, ReservationTimeout: 5 * time.Second}
	for _, m := range mut {
		m(&cfg)
	}
	w, err := New(cfg, Deps{Log: testLog(e.t).With("w", name), DB: e.db, NC: e.nc, JS: e.js, Redis: e.rs, Registry: prometheus.NewRegistry(), DatabaseURL: e.dsn})
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// start runs w until the returned stop is called (or the test ends); stop
// waits for Run to return.
func (e *env) start(w *Worker) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("worker %s: %v", w.cfg.Name, err)
				}
			case <-time.After(30 * time.Second):
				e.t.Errorf("worker %s did not stop", w.cfg.Name)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// skuIn returns a fresh SKU id in partition p.
func (e *env) skuIn(p int) uuid.UUID {
	for {
		id := uuid.New()
		if order.Partition(id, e.parts) == p {
			return id
		}
	}
}

// sku inserts a SKU of partition p with stock units at price 1000 EUR, and
// a per-user limit if limit > 0.
func (e *env) sku(p int, stock int64, limit int64) uuid.UUID {
	e.t.Helper()
	id := e.skuIn(p)
	var lim *int64
	if limit > 0 {
		lim = &limit
	}
	_, err := e.db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock, per_user_limit)
		VALUES ($1, $2, 1000, 'EUR', $3, $3, $4)`, id, "sku "+id.String()[:8], stock, lim)
	if err != nil {
		e.t.Fatalf("insert sku: %v", err)
	}
	return id
}

// address returns user's address, inserting it the first time.
func (e *env) address(user string) uuid.UUID {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if id, ok := e.addrs[user]; ok {
		return id
	}
	id := uuid.New()
	_, err := e.db.Exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		VALUES ($1, $2, 'R', 'L1', 'C', '1000', 'DE')`, id, user)
	if err != nil {
		e.t.Fatalf("insert address: %v", err)
	}
	e.addrs[user] = id
	return id
}

// addresses inserts an address for each of users in one statement.
func (e *env) addresses(users []string) {
	e.t.Helper()
	ids := make([]string, len(users))
	e.mu.Lock()
	for i, u := range users {
		id := uuid.New()
		e.addrs[u] = id
		ids[i] = id.String()
	}
	e.mu.Unlock()
	_, err := e.db.Exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		SELECT a, u, 'R', 'L1', 'C', '1000', 'DE' FROM unnest($1::uuid[], $2::text[]) AS v(a, u)`, pq.Array(ids), pq.Array(users))
	if err != nil {
		e.t.Fatalf("insert addresses: %v", err)
	}
}

// checkout returns user's checkout command for lines given as sku, qty,
// sku, qty...
func (e *env) checkout(user string, lines ...any) order.Command {
	e.t.Helper()
	var ls []order.LineRequest
	for i := 0; i < len(lines); i += 2 {
		ls = append(ls, order.LineRequest{SKUID: lines[i].(uuid.UUID), Quantity: int64(lines[i+1].(int))})
	}
	e.mu.Lock()
	e.seq++
	seq := e.seq
	e.mu.Unlock()
	return order.Command{
		ID: uuid.New(), Kind: order.KindCheckout, Partition: order.HomePartition(ls, e.parts), At: time.Now(),
		Checkout: &order.Checkout{
			OrderID: uuid.New(), OrderNumber: order.NumberFor(time.Now(), seq), UserID: user,
			AddressID: e.address(user), PaymentMethod: order.PayCard, Lines: ls, ShippingFee: 1000,
		},
	}
}

func (e *env) cancel(c order.Command) order.Command {
	return order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: c.Partition, At: time.Now(),
		Cancel: &order.Cancel{OrderID: c.Checkout.OrderID, UserID: c.Checkout.UserID}}
}

// publish publishes cmds with the ingress's publisher, from conc
// goroutines.
func (e *env) publish(conc int, cmds ...order.Command) {
	e.t.Helper()
	ch := make(chan order.Command)
	var wg sync.WaitGroup
	for range max(conc, 1) {
		wg.Go(func() {
			for c := range ch {
				if err := e.pub.Publish(context.Background(), c); err != nil {
					e.t.Errorf("publish: %v", err)
				}
			}
		})
	}
	for _, c := range cmds {
		ch <- c
	}
	close(ch)
	wg.Wait()
}

// publishAsync publishes cmds, one per message, without waiting for each
// ack (fast set-up of large queues).
func (e *env) publishAsync(cmds []order.Command) {
	e.t.Helper()
	for i, c := range cmds {
		data, err := order.EncodeEnvelope(c)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.js.PublishAsync(order.Subject(c.Partition), data, jetstream.WithMsgID(c.ID.String())); err != nil {
			e.t.Fatal(err)
		}
		if i%1000 == 999 || i == len(cmds)-1 {
			select {
			case <-e.js.PublishAsyncComplete():
			case <-time.After(60 * time.Second):
				e.t.Fatal("async publish did not complete")
			}
		}
	}
}

func orderIDs(cmds []order.Command) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(cmds))
	for _, c := range cmds {
		out = append(out, c.Checkout.OrderID)
	}
	return out
}

// waitFinal waits until every order of ids is in the database in a final
// or confirmed status, and the outbox is empty (every event published).
func (e *env) waitFinal(ids []uuid.UUID, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	for {
		var decided, outbox int
		err := e.db.QueryRow(`SELECT (SELECT count(*) FROM orders WHERE id = ANY($1::uuid[]) AND status <> 'pending'), (SELECT count(*) FROM outbox)`,
			pq.Array(strs)).Scan(&decided, &outbox)
		if err != nil {
			e.t.Fatal(err)
		}
		if decided == len(ids) && outbox == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: %d of %d orders decided, %d outbox rows left", timeout, decided, len(ids), outbox)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStatus waits until order id has status want.
func (e *env) waitStatus(id uuid.UUID, want order.Status, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, _ := e.status(id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("order %s is %q after %v, want %q", id, got, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) status(id uuid.UUID) (order.Status, order.RejectReason) {
	var st string
	var reason *string
	err := e.db.QueryRow(`SELECT status, reject_reason FROM orders WHERE id = $1`, id).Scan(&st, &reason)
	if err != nil {
		return "", ""
	}
	if reason == nil {
		return order.Status(st), ""
	}
	return order.Status(st), order.RejectReason(*reason)
}

type stock struct{ Stock, Sold int64 }

func (e *env) stock(id uuid.UUID) stock {
	e.t.Helper()
	var s stock
	if err := e.db.QueryRow(`SELECT stock, units_sold FROM skus WHERE id = $1`, id).Scan(&s.Stock, &s.Sold); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// event is one message of ORDER_EVENTS.
type event struct {
	order.Event
	raw     []byte
	msgID   string
	subject string
	data    json.RawMessage
}

// events reads the whole ORDER_EVENTS stream.
func (e *env) events() []event {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.js.Stream(ctx, natsbus.EventStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	total := info.State.Msgs
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []event
	for uint64(len(out)) < total {
		b, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			ev := event{raw: m.Data(), msgID: m.Headers().Get(jetstream.MsgIDHeader), subject: m.Subject()}
			var wire struct {
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(m.Data(), &ev.Event); err != nil {
				e.t.Fatalf("event %s: %v", m.Data(), err)
			}
			json.Unmarshal(m.Data(), &wire)
			ev.data = wire.Data
			out = append(out, ev)
		}
		if got == 0 {
			e.t.Fatalf("read %d of %d events", len(out), total)
		}
	}
	return out
}

// orderOf decodes an order event's data.
func (ev event) orderOf(t *testing.T) order.Order {
	t.Helper()
	var o order.Order
	if err := json.Unmarshal(ev.data, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

// decisions counts the decision events per order, and checks that every
// event is its message's Nats-Msg-Id and is on its type's subject.
func decisions(t *testing.T, evs []event) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ev := range evs {
		if ev.msgID != ev.ID.String() || ev.subject != order.EventSubject(ev.Type) {
			t.Errorf("event %s %s on %s with msg id %s", ev.ID, ev.Type, ev.subject, ev.msgID)
		}
		if ev.Type == order.EventConfirmed || ev.Type == order.EventRejected {
			out[ev.Subject]++
		}
	}
	return out
}

var (
	schemaOnce sync.Once
	schemas    map[string]*jsonschema.Schema
	schemaErr  error
)

// validateEvents checks every event against docs/events/*.schema.json.
func validateEvents(t *testing.T, evs []event) {
	t.Helper()
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		schemas = map[string]*jsonschema.Schema{}
		for _, name := range []string{"order", "stock"} {
			s, err := c.Compile(fmt.Sprintf("../../docs/events/%s.schema.json", name))
			if err != nil {
				schemaErr = err
				return
			}
			schemas[name] = s
		}
	})
	if schemaErr != nil {
		t.Fatalf("compile schemas: %v", schemaErr)
	}
	for _, ev := range evs {
		s := schemas["order"]
		if ev.Type == order.EventStockChanged {
			s = schemas["stock"]
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(ev.raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(inst); err != nil {
			t.Errorf("event %s does not match its schema: %v\n%s", ev.Type, err, ev.raw)
		}
		if ev.Type != order.EventStockChanged {
			if o := ev.orderOf(t); o.ID.String() != ev.Subject {
				t.Errorf("event subject %s for order %s", ev.Subject, o.ID)
			}
		}
	}
}
