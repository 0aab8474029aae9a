package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// expire runs ExpireDue on partition p and fails the test on error.
func (e *ptEnv) expire(p int) *postgres.BatchResult {
	e.t.Helper()
	res, err := e.db.ExpireDue(context.Background(), p, e.cfg, 100)
	if err != nil {
		e.t.Fatalf("expire due: %v", err)
	}
	return res
}

// eventTypes returns the types of the events of order id among evs.
func eventTypes(evs []order.Event, id uuid.UUID) []order.EventType {
	var out []order.EventType
	for _, ev := range evs {
		if ev.Subject == id.String() {
			out = append(out, ev.Type)
		}
	}
	return out
}

func waitHold(t *testing.T, hold time.Duration) {
	t.Helper()
	time.Sleep(hold + 50*time.Millisecond)
}

func TestExpireDueOnePartition(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(1, 5, ptHold(1))
	c := e.checkout("u1", sku, 2)
	e.apply(c)
	if res := e.expire(1); len(res.Orders) != 0 {
		t.Fatalf("expired %d orders before their hold passed", len(res.Orders))
	}
	waitHold(t, time.Second)
	if res := e.expire(0); len(res.Orders) != 0 {
		t.Fatalf("partition 0 expired %d orders of partition 1", len(res.Orders))
	}
	res := e.expire(1)
	if len(res.Orders) != 1 || res.Orders[0].Status != order.StatusExpired || res.Orders[0].ID != c.Checkout.OrderID {
		t.Fatalf("expired %+v, want the order", res.Orders)
	}
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusExpired {
		t.Fatalf("status %s, want expired", st)
	}
	if got := e.stock(sku); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v, want all back", got)
	}
	// A second sweep, a cancel and a release change nothing.
	if res := e.expire(1); len(res.Orders) != 0 {
		t.Errorf("a second sweep expired %d orders", len(res.Orders))
	}
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindCancel, Partition: 1, At: time.Now(), Cancel: &order.Cancel{OrderID: c.Checkout.OrderID, UserID: "u1"}})
	e.apply(order.Command{ID: uuid.New(), Kind: order.KindRelease, Partition: 1, At: time.Now(), Release: &order.Release{OrderID: c.Checkout.OrderID}})
	if got := e.stock(sku); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v after a second sweep, cancel and release", got)
	}
	types := eventTypes(e.deliver(), c.Checkout.OrderID)
	want := []order.EventType{order.EventConfirmed, order.EventExpired}
	if len(types) != 2 || types[0] != want[0] || types[1] != want[1] {
		t.Errorf("order events %v, want %v", types, want)
	}
}

func TestExpireDueMultiPartition(t *testing.T) {
	e := ptNew(t)
	skus := [3]uuid.UUID{e.sku(0, 5, ptHold(1)), e.sku(1, 5), e.sku(2, 5)}
	c := e.multi("u1", skus, 2)
	e.apply(c)
	e.deliver()
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
		t.Fatalf("status %s", st)
	}
	waitHold(t, time.Second)
	if res := e.expire(0); len(res.Orders) != 1 {
		t.Fatalf("expired %d orders, want 1", len(res.Orders))
	}
	types := eventTypes(e.deliver(), c.Checkout.OrderID)
	for _, s := range skus {
		if got := e.stock(s); got != (ptStock{5, 0}) {
			t.Errorf("sku %s: %+v, want all back", s, got)
		}
	}
	n := 0
	for _, ty := range types {
		if ty == order.EventExpired {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d order.expired events, want 1 (events %v)", n, types)
	}
}

func TestPayBeforeExpiry(t *testing.T) {
	e := ptNew(t)
	sku := e.sku(2, 5, ptHold(1))
	c := e.checkout("u1", sku, 1)
	e.apply(c)
	ctx := context.Background()
	pay := &order.Payment{OrderID: c.Checkout.OrderID, Amount: 2000, Currency: "EUR", ProviderRef: "pi_1"}
	o, paid, err := e.db.PayOrder(ctx, pay)
	if err != nil || !paid || o.Status != order.StatusPaid || o.PaidAt == nil {
		t.Fatalf("pay: %+v %v %v", o, paid, err)
	}
	waitHold(t, time.Second)
	if res := e.expire(2); len(res.Orders) != 0 {
		t.Errorf("a paid order expired")
	}
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusPaid {
		t.Errorf("status %s, want paid", st)
	}
	if got := e.stock(sku); got != (ptStock{4, 1}) {
		t.Errorf("stock %+v, want the paid unit held", got)
	}
	// The provider's retry: no further effect.
	before := len(e.outbox())
	if o, paid, err := e.db.PayOrder(ctx, pay); err != nil || paid || o.Status != order.StatusPaid {
		t.Errorf("second pay: %+v %v %v", o, paid, err)
	}
	if n := len(e.outbox()); n != before {
		t.Errorf("the retry wrote %d outbox rows", n-before)
	}
	types := eventTypes(e.deliver(), c.Checkout.OrderID)
	if len(types) != 2 || types[1] != order.EventPaid {
		t.Errorf("events %v, want confirmed and paid", types)
	}
}

func TestPayOrderRefusals(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(1, 5, ptHold(1))
	c := e.checkout("u1", sku, 1)
	e.apply(c)
	id := c.Checkout.OrderID
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
	pending := e.multi("u2", skus, 1)
	e.apply(pending)

	for _, tc := range []struct {
		name string
		pay  order.Payment
		code order.Code
	}{
		{"unknown order", order.Payment{OrderID: uuid.New(), Amount: 2000, Currency: "EUR", ProviderRef: "x"}, order.ENOTFOUND},
		{"amount", order.Payment{OrderID: id, Amount: 1999, Currency: "EUR", ProviderRef: "x"}, order.EINVALID},
		{"currency", order.Payment{OrderID: id, Amount: 2000, Currency: "USD", ProviderRef: "x"}, order.EINVALID},
		{"no provider ref", order.Payment{OrderID: id, Amount: 2000, Currency: "EUR"}, order.EINVALID},
		{"pending", order.Payment{OrderID: pending.Checkout.OrderID, Amount: 4000, Currency: "EUR", ProviderRef: "x"}, order.ECONFLICT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.outbox())
			_, _, err := e.db.PayOrder(ctx, &tc.pay)
			if got := order.ErrorCode(err); got != tc.code {
				t.Errorf("error %v (%s), want %s", err, got, tc.code)
			}
			if st, _ := e.status(id); st != order.StatusConfirmed {
				t.Errorf("status %s, want confirmed", st)
			}
			if n := len(e.outbox()); n != before {
				t.Errorf("wrote %d outbox rows", n-before)
			}
		})
	}
	// Expired: no longer payable.
	waitHold(t, time.Second)
	e.expire(1)
	_, _, err := e.db.PayOrder(ctx, &order.Payment{OrderID: id, Amount: 2000, Currency: "EUR", ProviderRef: "late"})
	if order.ErrorCode(err) != order.ECONFLICT {
		t.Errorf("paying an expired order: %v, want a conflict", err)
	}
	if st, _ := e.status(id); st != order.StatusExpired {
		t.Errorf("status %s, want expired", st)
	}
}

// TestPaymentRacesExpiry pays and expires the same due order at once, many
// times: exactly one of them wins each time.
func TestPaymentRacesExpiry(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(3, 100, ptHold(1))
	var cmds []order.Command
	for range 10 {
		cmds = append(cmds, e.checkout("u1", sku, 1))
	}
	e.apply(cmds...)
	waitHold(t, time.Second)
	paid := make(chan int)
	go func() {
		n := 0
		for i, c := range cmds {
			if _, ok, err := e.db.PayOrder(ctx, &order.Payment{OrderID: c.Checkout.OrderID, Amount: 2000, Currency: "EUR", ProviderRef: "r" + string(rune('a'+i))}); err == nil && ok {
				n++
			}
		}
		paid <- n
	}()
	expired := 0
	for range 20 {
		res, err := e.db.ExpireDue(ctx, 3, e.cfg, 3)
		if err != nil {
			t.Fatal(err)
		}
		expired += len(res.Orders)
	}
	n := <-paid
	expired += len(e.expire(3).Orders)
	if n+expired != 10 {
		t.Errorf("%d paid + %d expired, want 10", n, expired)
	}
	if got := e.stock(sku); got != (ptStock{100 - int64(n), int64(n)}) {
		t.Errorf("stock %+v with %d paid", got, n)
	}
}

// refusedEvents returns the order.payment_refused events of order id in
// the outbox, decoded.
func (e *ptEnv) refusedEvents(id uuid.UUID) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, r := range e.outbox() {
		if r.Subject != "orders.events.order.payment_refused" {
			continue
		}
		var ev struct {
			Subject string         `json:"subject"`
			Data    map[string]any `json:"data"`
		}
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			e.t.Fatal(err)
		}
		if ev.Subject == id.String() {
			validateOrderEvent(e.t, r.Payload)
			out = append(out, ev.Data)
		}
	}
	return out
}

// validateOrderEvent checks an order event against
// docs/events/order.schema.json.
func validateOrderEvent(t *testing.T, payload []byte) {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	s, err := c.Compile("../../docs/events/order.schema.json")
	if err != nil {
		t.Fatalf("compile the order event schema: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(inst); err != nil {
		t.Errorf("event does not match its schema: %v\n%s", err, payload)
	}
}

// TestPayOrderHoldEnded: a payment that arrives after the order's hold
// ended, before the expiry sweep ran, is refused (SPEC 3.3): the order
// stays as it is, to be expired by the sweep, and an order.payment_refused
// event tells the shop to refund it, once however often the provider
// retries.
func TestPayOrderHoldEnded(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(1, 5, ptHold(1))
	c := e.checkout("u1", sku, 1)
	e.apply(c)
	id := c.Checkout.OrderID
	waitHold(t, time.Second)
	pay := &order.Payment{OrderID: id, Amount: 2000, Currency: "EUR", ProviderRef: "pi_late"}
	for range 2 {
		_, paid, err := e.db.PayOrder(ctx, pay)
		if order.ErrorCode(err) != order.ECONFLICT || paid {
			t.Fatalf("paying after the hold: paid %v, error %v, want a conflict", paid, err)
		}
	}
	if st, _ := e.status(id); st != order.StatusConfirmed {
		t.Errorf("status %s, want confirmed until the sweep", st)
	}
	refused := e.refusedEvents(id)
	if len(refused) != 1 {
		t.Fatalf("%d order.payment_refused events, want 1", len(refused))
	}
	p, _ := refused[0]["refused_payment"].(map[string]any)
	if refused[0]["status"] != "confirmed" || p["provider_ref"] != "pi_late" || p["amount"] != 2000.0 || p["currency"] != "EUR" || p["reason"] != "hold_ended" {
		t.Errorf("refused event data %v", refused[0])
	}
	if res := e.expire(1); len(res.Orders) != 1 {
		t.Errorf("the sweep expired %d orders, want the refused one", len(res.Orders))
	}
	if got := e.stock(sku); got != (ptStock{5, 0}) {
		t.Errorf("stock %+v, want all back", got)
	}
}

// TestPayOrderRefusedEvents: a valid payment (amount and currency match)
// of an order that is no longer payable is refused with an
// order.payment_refused event naming why; a payment of a pending order or
// one that does not match is refused without one.
func TestPayOrderRefusedEvents(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(1, 5, ptHold(1))
	scarce := e.sku(1, 0)
	expired, cancelled, paid := e.checkout("u1", sku, 1), e.checkout("u2", sku, 1), e.checkout("u3", sku, 1)
	rejected := e.checkout("u4", scarce, 1)
	e.apply(expired, cancelled, paid, rejected)
	e.apply(ptCancel(1, cancelled.Checkout.OrderID, "u2"))
	if _, _, err := e.db.PayOrder(ctx, &order.Payment{OrderID: paid.Checkout.OrderID, Amount: 2000, Currency: "EUR", ProviderRef: "pi_first"}); err != nil {
		t.Fatal(err)
	}
	waitHold(t, time.Second)
	e.expire(1)

	for _, tc := range []struct {
		name   string
		id     uuid.UUID
		reason string
	}{
		{"expired", expired.Checkout.OrderID, "expired"},
		{"cancelled", cancelled.Checkout.OrderID, "cancelled"},
		{"rejected", rejected.Checkout.OrderID, "rejected"},
		{"paid under another reference", paid.Checkout.OrderID, "already_paid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := e.db.StoredOrderForTest(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = e.db.PayOrder(ctx, &order.Payment{OrderID: tc.id, Amount: o.GrandTotal, Currency: o.Currency, ProviderRef: "pi_" + tc.name})
			if order.ErrorCode(err) != order.ECONFLICT {
				t.Errorf("error %v, want a conflict", err)
			}
			if st, _ := e.status(tc.id); st != o.Status {
				t.Errorf("status %s, want %s unchanged", st, o.Status)
			}
			refused := e.refusedEvents(tc.id)
			if len(refused) != 1 {
				t.Fatalf("%d order.payment_refused events, want 1", len(refused))
			}
			if p, _ := refused[0]["refused_payment"].(map[string]any); p["reason"] != tc.reason || p["provider_ref"] != "pi_"+tc.name {
				t.Errorf("refused payment %v, want reason %s", p, tc.reason)
			}
		})
	}
	// Not a valid payment of the expired order, and a payment of a
	// pending one: refused without an event.
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
	pending := e.multi("u5", skus, 1)
	e.apply(pending)
	before := len(e.outbox())
	for _, p := range []order.Payment{
		{OrderID: expired.Checkout.OrderID, Amount: 1, Currency: "EUR", ProviderRef: "pi_wrong"},
		{OrderID: pending.Checkout.OrderID, Amount: 4000, Currency: "EUR", ProviderRef: "pi_pending"},
	} {
		if _, _, err := e.db.PayOrder(ctx, &p); err == nil {
			t.Errorf("payment %+v accepted", p)
		}
	}
	if n := len(e.outbox()); n != before {
		t.Errorf("%d outbox rows written for payments that are not refunds", n-before)
	}
}
