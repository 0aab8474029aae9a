package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
)

func init() {
	// Short enough that the tests see heartbeats and re-reads.
	sseHeartbeat = 300 * time.Millisecond
	statusRecheck = 500 * time.Millisecond
}

// orderEnv is a testEnv with the order side wired to real services: a NATS
// server with JetStream and both streams, the command publisher, the order
// store and number allocator on the env's database, and the status hub. No
// worker runs: tests play the partition's part with decide.
type orderEnv struct {
	*testEnv
	NATS *server.Server
	NC   *nats.Conn // the connection the ingress publishes on
	JS   jetstream.JetStream
	Hub  *natsbus.Hub
}

// orderOption changes an orderEnv's server configuration or dependencies
// before the server is built; the env's NATS fields are set by then.
type orderOption func(e *orderEnv, cfg *Config, d *Deps)

// newOrderEnv starts an orderEnv. Its publish timeout is one second, so
// that a test of JetStream being down is quick.
func newOrderEnv(t *testing.T, opts ...orderOption) *orderEnv {
	t.Helper()
	ns := natstest.Start(t)
	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nc := connect("ingress")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	hub, err := natsbus.NewHub(connect("hub"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e := &orderEnv{NATS: ns, NC: nc, JS: js, Hub: hub}
	wire := func(te *testEnv, cfg *Config, d *Deps) {
		cfg.PublishTimeout = time.Second
		d.Orders = te.DB
		d.Numbers = te.DB
		d.Publisher = natsbus.NewPublisher(js)
		d.Waiter = hub
	}
	envOpts := []envOption{wire}
	for _, o := range opts {
		envOpts = append(envOpts, func(_ *testEnv, cfg *Config, d *Deps) { o(e, cfg, d) })
	}
	e.testEnv = newTestEnv(t, envOpts...)
	// Registered after the HTTP server's cleanup, so it runs before it:
	// streams end before the server waits for them.
	t.Cleanup(hub.Close)
	return e
}

// buyer is a user with a token and an address.
type buyer struct {
	ID      string
	Token   string
	Address uuid.UUID
}

var buyerSeq atomic.Int64

// newBuyer creates a user with an address through the API.
func (e *orderEnv) newBuyer(t *testing.T) buyer {
	t.Helper()
	id := fmt.Sprintf("buyer-%d", buyerSeq.Add(1))
	tok := e.token(t, id)
	a := e.createAddress(t, tok, newAddress("Ada "+id))
	return buyer{ID: id, Token: tok, Address: a.ID}
}

// directBody is a direct-purchase checkout body.
func directBody(b buyer, lines ...order.LineRequest) map[string]any {
	return map[string]any{"address_id": b.Address, "payment_method": "card", "items": lines}
}

// checkout posts a checkout with an optional Idempotency-Key.
func (e *orderEnv) checkout(t *testing.T, b buyer, body any, key string) (*http.Response, []byte) {
	t.Helper()
	h := http.Header{}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	return e.doHeaders(t, "POST", "/v1/orders", b.Token, body, h)
}

// mustCheckout posts a checkout and fails unless it is accepted.
func (e *orderEnv) mustCheckout(t *testing.T, b buyer, body any, key string) accepted {
	t.Helper()
	resp, data := e.checkout(t, b, body, key)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("checkout: status %d, want 202; body: %s", resp.StatusCode, data)
	}
	var a accepted
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return a
}

// getOrder fetches an order with GET /v1/orders/{id}.
func (e *orderEnv) getOrder(t *testing.T, b buyer, id uuid.UUID, want int) *order.Order {
	t.Helper()
	var o order.Order
	var out any = &o
	if want != http.StatusOK {
		out = nil
	}
	e.mustDo(t, "GET", "/v1/orders/"+id.String(), b.Token, nil, want, out)
	return &o
}

// commandCount returns the number of messages on ORDER_CMDS.
func (e *orderEnv) commandCount(t *testing.T) uint64 {
	t.Helper()
	s, err := e.JS.Stream(context.Background(), natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// streamedCommand is one command read back from ORDER_CMDS.
type streamedCommand struct {
	order.Command
	MsgID string // the message's Nats-Msg-Id
}

// commands reads every command on ORDER_CMDS, in stream order, decoded and
// validated as a partition would.
func (e *orderEnv) commands(t *testing.T) []streamedCommand {
	t.Helper()
	ctx := context.Background()
	s, err := e.JS.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamedCommand
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get command %d: %v", seq, err)
		}
		p, err := strconv.Atoi(strings.TrimPrefix(m.Subject, "orders.cmd."))
		if err != nil {
			t.Fatalf("command on subject %s", m.Subject)
		}
		cmds, err := order.DecodeEnvelope(m.Data, p, e.Server.cfg.Partitions)
		if err != nil {
			t.Fatalf("command %d is poison: %v", seq, err)
		}
		for _, c := range cmds {
			out = append(out, streamedCommand{Command: c, MsgID: m.Header.Get(jetstream.MsgIDHeader)})
		}
	}
	return out
}

// decide plays a partition (and the relay): it sets the order's status,
// with prices when it is confirmed, in the status cache as the worker does
// (ApplyDecisions), and publishes the event on ORDER_EVENTS.
func (e *orderEnv) decide(t *testing.T, id uuid.UUID, status order.Status) *order.Order {
	t.Helper()
	ctx := context.Background()
	o, err := e.Redis.OrderStatus(ctx, id)
	if err != nil {
		t.Fatalf("decide %s: %v", id, err)
	}
	o.Status = status
	now := time.Now().UTC()
	o.UpdatedAt = now
	if o.DecidedAt == nil {
		o.DecidedAt = &now
	}
	o.Currency = "EUR"
	for i := range o.Lines {
		o.Lines[i].UnitPrice = 1500
	}
	o.Price()
	if status == order.StatusRejected {
		o.RejectReason = order.RejectOutOfStock
	}
	if err := e.Redis.ApplyDecisions(ctx, []*order.Order{o}, nil); err != nil {
		t.Fatal(err)
	}
	ev := order.OrderEvent(o, now)
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.JS.Publish(ctx, order.EventSubject(ev.Type), data, jetstream.WithMsgID(ev.ID.String())); err != nil {
		t.Fatal(err)
	}
	return o
}

// insertOrder writes an order into PostgreSQL as a partition would, with
// one line of sku, and returns it.
func (e *orderEnv) insertOrder(t *testing.T, b buyer, sku *order.SKU, status order.Status, at time.Time, key, hash string) *order.Order {
	t.Helper()
	id := uuid.New()
	if key != "" {
		id = order.IdempotentID(b.ID, key)
	}
	at = at.UTC().Truncate(time.Microsecond)
	o := &order.Order{
		ID: id, Number: order.NumberFor(at, 900_000_000+buyerSeq.Add(1)), UserID: b.ID, AddressID: b.Address,
		PaymentMethod: order.PayCard, Status: status, Currency: "EUR",
		Lines:       []order.Line{{SKUID: sku.ID, Name: sku.Name, Quantity: 1, UnitPrice: sku.Price}},
		ShippingFee: testShippingFee, AcceptedAt: at, UpdatedAt: at,
	}
	o.Price()
	var reason, nkey, nhash *string
	if status == order.StatusRejected {
		r := string(order.RejectOutOfStock)
		reason, o.RejectReason = &r, order.RejectOutOfStock
	}
	if key != "" {
		nkey, nhash = &key, &hash
	}
	_, err := e.DB.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, reject_reason,
		currency, subtotal, shipping_fee, grand_total, home_partition, idempotency_key, request_hash, accepted_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		o.ID, o.Number, o.UserID, o.AddressID, o.PaymentMethod, o.Status, reason, o.Currency, o.Subtotal, o.ShippingFee, o.GrandTotal,
		order.Partition(sku.ID, e.Server.cfg.Partitions), nkey, nhash, o.AcceptedAt, o.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.Exec(`INSERT INTO order_lines (order_id, line_no, sku_id, quantity, unit_price, line_total) VALUES ($1, 0, $2, 1, $3, $3)`, o.ID, sku.ID, sku.Price); err != nil {
		t.Fatal(err)
	}
	return o
}

// redisKey is the env's Redis key for a name such as "order:<id>".
func (e *orderEnv) redisKey(name string) string { return e.RedisPrefix + name }

// wantStatus fails the test unless the order's status is want.
func wantStatus(t *testing.T, o *order.Order, want order.Status) {
	t.Helper()
	if o.Status != want {
		t.Fatalf("order %s is %s, want %s", o.ID, o.Status, want)
	}
}
