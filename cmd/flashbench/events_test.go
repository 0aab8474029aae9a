package main

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
)

// eventBus is a real JetStream server with the ORDER_EVENTS stream.
type eventBus struct {
	t      *testing.T
	js     jetstream.JetStream
	settle time.Duration // how long verify waits on a quiet stream
}

func newEventBus(t *testing.T) *eventBus {
	t.Helper()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
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
	return &eventBus{t: t, js: js, settle: 500 * time.Millisecond}
}

// publish publishes ev as the outbox relay does: on orders.events.<type>
// with the event id as Nats-Msg-Id (msgID overrides it, to store a
// duplicate that JetStream's dedupe window would drop).
func (b *eventBus) publish(ev order.Event, msgID string) {
	b.t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		b.t.Fatal(err)
	}
	if msgID == "" {
		msgID = ev.ID.String()
	}
	if _, err := b.js.Publish(context.Background(), order.EventSubject(ev.Type), data, jetstream.WithMsgID(msgID)); err != nil {
		b.t.Fatal(err)
	}
}

// decision returns the event announcing that order id reached status.
func decision(id uuid.UUID, status order.Status) order.Event {
	o := &order.Order{ID: id, Status: status, UserID: "fb-test-1"}
	if status == order.StatusRejected {
		o.RejectReason = order.RejectOutOfStock
	}
	return order.OrderEvent(o, time.Now())
}

func (b *eventBus) verify(accepted map[uuid.UUID]order.Status, wait time.Duration) EventReport {
	b.t.Helper()
	r, err := verifyEvents(context.Background(), b.js, EventScope{
		Accepted: accepted, Since: time.Now().Add(-time.Minute), Wait: wait, Settle: b.settle,
	})
	if err != nil {
		b.t.Fatalf("verifyEvents: %v", err)
	}
	return r
}

func TestVerifyEventsOneDecisionPerOrder(t *testing.T) {
	t.Parallel()
	b := newEventBus(t)
	a, c, d := uuid.New(), uuid.New(), uuid.New()
	accepted := map[uuid.UUID]order.Status{a: order.StatusConfirmed, c: order.StatusRejected, d: order.StatusPaid}

	b.publish(order.OrderEvent(&order.Order{ID: a, Status: order.StatusPending}, time.Now()), "") // order.accepted: not a decision
	b.publish(decision(a, order.StatusConfirmed), "")
	b.publish(decision(a, order.StatusConfirmed), "") // republished in the dedupe window: dropped by JetStream
	b.publish(decision(c, order.StatusRejected), "")
	b.publish(decision(d, order.StatusConfirmed), "")
	b.publish(decision(d, order.StatusPaid), "") // a later change, not a second decision
	b.publish(order.StockEvent(order.StockChange{SKUID: uuid.New(), Stock: 1}, time.Now()), "")
	b.publish(decision(uuid.New(), order.StatusConfirmed), "") // someone else's order
	dup := decision(c, order.StatusRejected)
	b.publish(dup, "relay-retry-after-the-window") // stored twice: consumers dedupe on the event id

	r := b.verify(accepted, 10*time.Second)
	if got := failedChecks(r.Checks); len(got) != 0 {
		t.Errorf("failed checks %v: %+v", got, r.Checks)
	}
	if r.Duplicates != 1 || r.Missing != 0 || r.Multiple != 0 || r.Mismatched != 0 {
		t.Errorf("duplicates %d missing %d multiple %d mismatched %d, want 1 0 0 0", r.Duplicates, r.Missing, r.Multiple, r.Mismatched)
	}
	if r.Events != 4 {
		t.Errorf("%d distinct decision events read, want 4", r.Events)
	}
}

func TestVerifyEventsMissingDecision(t *testing.T) {
	t.Parallel()
	b := newEventBus(t)
	a, lost := uuid.New(), uuid.New()
	b.publish(decision(a, order.StatusConfirmed), "")
	start := time.Now()
	r := b.verify(map[uuid.UUID]order.Status{a: order.StatusConfirmed, lost: ""}, 3*time.Second)
	if got := failedChecks(r.Checks); !slices.Equal(got, []string{CheckOneDecisionEvent}) {
		t.Errorf("failed checks %v, want [%s]", got, CheckOneDecisionEvent)
	}
	if r.Missing != 1 {
		t.Errorf("missing %d, want 1", r.Missing)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s: it should give up once the stream is quiet for the settle time", took)
	}
}

func TestVerifyEventsLateDecisionIsAwaited(t *testing.T) {
	t.Parallel()
	b := newEventBus(t)
	// Quiet for longer than the relay's delay, even on a loaded machine.
	b.settle = 4 * time.Second
	a := uuid.New()
	published := make(chan struct{})
	go func() {
		defer close(published)
		time.Sleep(300 * time.Millisecond) // the outbox relay is behind
		b.publish(decision(a, order.StatusConfirmed), "")
	}()
	r := b.verify(map[uuid.UUID]order.Status{a: order.StatusConfirmed}, 10*time.Second)
	<-published
	if got := failedChecks(r.Checks); len(got) != 0 {
		t.Errorf("failed checks %v", got)
	}
}

func TestVerifyEventsTwoDecisions(t *testing.T) {
	t.Parallel()
	b := newEventBus(t)
	a, c := uuid.New(), uuid.New()
	b.publish(decision(a, order.StatusConfirmed), "")
	b.publish(decision(a, order.StatusRejected), "") // decided twice, differently
	b.publish(decision(c, order.StatusRejected), "")
	r := b.verify(map[uuid.UUID]order.Status{a: order.StatusConfirmed, c: order.StatusConfirmed}, 5*time.Second)
	if got := failedChecks(r.Checks); !slices.Equal(got, []string{CheckDecisionMatches, CheckOneDecisionEvent}) {
		t.Errorf("failed checks %v", got)
	}
	if r.Multiple != 1 || r.Mismatched != 2 {
		t.Errorf("multiple %d mismatched %d, want 1 2", r.Multiple, r.Mismatched)
	}
}

func TestVerifyEventsNoStream(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	_, err = verifyEvents(context.Background(), js, EventScope{Since: time.Now(), Wait: time.Second})
	if err == nil {
		t.Error("no error without the ORDER_EVENTS stream")
	}
}
