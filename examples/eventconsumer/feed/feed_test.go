package feed_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/examples/eventconsumer/feed"
	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
)

func newJS(t *testing.T) jetstream.JetStream {
	t.Helper()
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
	return js
}

// publish publishes ev under msgID (a different one than the event id
// stands for a republish beyond the stream's dedupe window).
func publish(t *testing.T, js jetstream.JetStream, ev order.Event, msgID string) {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), order.EventSubject(ev.Type), data, jetstream.WithMsgID(msgID)); err != nil {
		t.Fatal(err)
	}
}

func TestConsumerDedupes(t *testing.T) {
	js := newJS(t)
	o := &order.Order{ID: uuid.New(), Number: "FS-1", UserID: "u1", Status: order.StatusConfirmed, Lines: []order.Line{}}
	confirmed := order.OrderEvent(o, time.Now())
	o2 := *o
	o2.Status = order.StatusCancelled
	cancelled := order.OrderEvent(&o2, time.Now())
	stock := order.StockEvent(order.StockChange{SKUID: uuid.New(), Stock: 3, UnitsSold: 1, Delta: -1}, time.Now())

	publish(t, js, confirmed, "a")
	publish(t, js, confirmed, "b") // the same event again
	js.Publish(context.Background(), "orders.events.order.confirmed", []byte("not an event"))
	publish(t, js, stock, stock.ID.String())
	publish(t, js, cancelled, cancelled.ID.String())

	var mu sync.Mutex
	var got []string
	failOnce := true
	handler := func(_ context.Context, ev *feed.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Type == order.EventStockChanged && failOnce {
			failOnce = false
			return errors.New("downstream store is down")
		}
		s := string(ev.Type)
		if ev.Type != order.EventStockChanged {
			o, err := ev.Order()
			if err != nil {
				return err
			}
			s += " " + string(o.Status)
		}
		got = append(got, s)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := feed.New(ctx, js, feed.Config{Durable: "test"}, handler, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate would show up now
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"order.confirmed confirmed", "order.cancelled cancelled", "stock.changed"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("handled (-want +got):\n%s", diff)
	}
}

func TestSeenForgetsOldest(t *testing.T) {
	s := feed.NewSeen(2)
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	s.Add(a)
	s.Add(b)
	s.Add(b)
	s.Add(c)
	if s.Has(a) || !s.Has(b) || !s.Has(c) {
		t.Errorf("has a %v b %v c %v, want the oldest forgotten", s.Has(a), s.Has(b), s.Has(c))
	}
}
