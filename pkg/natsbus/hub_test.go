package natsbus_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
)

// hubEnv is a Hub on a real server, with a connection to publish events the
// way the outbox relay does (through JetStream).
type hubEnv struct {
	hub *natsbus.Hub
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	s := natstest.Start(t)
	conn := func() *nats.Conn {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	pub := conn()
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	hub, err := natsbus.NewHub(conn(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return &hubEnv{hub: hub, nc: pub, js: js}
}

// publish sends the event announcing o's status on ORDER_EVENTS.
func (e *hubEnv) publish(t *testing.T, o *order.Order) {
	t.Helper()
	ev := order.OrderEvent(o, time.Now())
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), order.EventSubject(ev.Type), data, jetstream.WithMsgID(ev.ID.String())); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, ch <-chan *order.Order) *order.Order {
	t.Helper()
	select {
	case o, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no change within 5s")
	}
	return nil
}

func none(t *testing.T, ch <-chan *order.Order) {
	t.Helper()
	select {
	case o := <-ch:
		t.Fatalf("unexpected change %s %s", o.ID, o.Status)
	case <-time.After(100 * time.Millisecond):
	}
}

func testOrder(status order.Status) *order.Order {
	return &order.Order{ID: uuid.New(), Number: "FS-1", UserID: "u1", Status: status, Lines: []order.Line{}}
}

func TestHubFansOutByOrder(t *testing.T) {
	t.Parallel()
	e := newHubEnv(t)
	a, b := testOrder(order.StatusConfirmed), testOrder(order.StatusRejected)
	a1, stopA1 := e.hub.Wait(a.ID)
	defer stopA1()
	a2, stopA2 := e.hub.Wait(a.ID)
	defer stopA2()
	b1, stopB1 := e.hub.Wait(b.ID)
	defer stopB1()
	if got := e.hub.Waiting(); got != 3 {
		t.Errorf("Waiting() = %d, want 3", got)
	}

	// A stock event and an order nobody waits for reach no one.
	stock := order.StockEvent(order.StockChange{SKUID: uuid.New(), Stock: 1}, time.Now())
	data, _ := json.Marshal(stock)
	if _, err := e.js.Publish(context.Background(), order.EventSubject(stock.Type), data); err != nil {
		t.Fatal(err)
	}
	e.publish(t, testOrder(order.StatusConfirmed))
	e.publish(t, a)
	for _, ch := range []<-chan *order.Order{a1, a2} {
		if got := recv(t, ch); got.ID != a.ID || got.Status != order.StatusConfirmed {
			t.Errorf("a's waiter got %s %s, want %s confirmed", got.ID, got.Status, a.ID)
		}
	}
	none(t, b1)
	e.publish(t, b)
	if got := recv(t, b1); got.ID != b.ID || got.Status != order.StatusRejected {
		t.Errorf("b's waiter got %s %s", got.ID, got.Status)
	}
	none(t, a1)

	// A stopped waiter gets nothing more; the other still does.
	stopA1()
	stopA1() // twice is harmless
	paid := *a
	paid.Status = order.StatusPaid
	e.publish(t, &paid)
	if got := recv(t, a2); got.Status != order.StatusPaid {
		t.Errorf("a2 got %s, want paid", got.Status)
	}
	none(t, a1)
	if got := e.hub.Waiting(); got != 2 {
		t.Errorf("Waiting() = %d, want 2", got)
	}
}

func TestHubNeverBlocksOnASlowWaiter(t *testing.T) {
	t.Parallel()
	e := newHubEnv(t)
	slow := testOrder(order.StatusConfirmed)
	other := testOrder(order.StatusConfirmed)
	slowCh, stopSlow := e.hub.Wait(slow.ID)
	defer stopSlow()
	otherCh, stopOther := e.hub.Wait(other.ID)
	defer stopOther()
	// Far more changes than the buffer holds, to a waiter that never reads;
	// the last one is final.
	statuses := []order.Status{order.StatusConfirmed, order.StatusPending, order.StatusConfirmed, order.StatusPending,
		order.StatusConfirmed, order.StatusPending, order.StatusConfirmed, order.StatusPending, order.StatusCancelled}
	for i, st := range statuses {
		o := *slow
		o.Status = st
		o.Number = string(rune('a' + i)) // distinct event bodies
		ev := order.OrderEvent(&o, time.Now())
		ev.ID = uuid.New()
		data, _ := json.Marshal(ev)
		if err := e.nc.Publish(order.EventSubject(ev.Type), data); err != nil {
			t.Fatal(err)
		}
	}
	// The subscription is not stuck: another order's waiter is served.
	e.publish(t, other)
	recv(t, otherCh)
	if e.hub.Dropped() == 0 {
		t.Error("Dropped() = 0, want the overflow counted")
	}
	// The newest change survived the overflow.
	var last *order.Order
	for range natsbus.HubBuffer {
		select {
		case o := <-slowCh:
			last = o
		default:
		}
	}
	if last == nil || last.Status != order.StatusCancelled {
		t.Errorf("the slow waiter's newest change is %v, want cancelled", last)
	}
}

func TestHubCloseEndsWaiters(t *testing.T) {
	t.Parallel()
	e := newHubEnv(t)
	ch, stop := e.hub.Wait(uuid.New())
	e.hub.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("received a change, want the channel closed")
		}
	case <-time.After(time.Second):
		t.Fatal("the channel is still open after Close")
	}
	stop() // after Close: harmless
	e.hub.Close()
	late, stopLate := e.hub.Wait(uuid.New())
	defer stopLate()
	if _, ok := <-late; ok {
		t.Error("Wait after Close: the channel is open")
	}
}

func TestHubIgnoresGarbage(t *testing.T) {
	t.Parallel()
	e := newHubEnv(t)
	o := testOrder(order.StatusConfirmed)
	ch, stop := e.hub.Wait(o.ID)
	defer stop()
	for _, body := range []string{
		`not json`,
		`{"type":"order.confirmed","subject":"not-a-uuid","data":{}}`,
		`{"type":"order.confirmed","subject":"` + o.ID.String() + `","data":"nope"}`,
		`{"type":"order.confirmed","subject":"` + o.ID.String() + `","data":{"id":"` + uuid.NewString() + `"}}`,
	} {
		if err := e.nc.Publish("orders.events.order.confirmed", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	e.publish(t, o)
	if got := recv(t, ch); got.ID != o.ID {
		t.Errorf("got %s, want %s", got.ID, o.ID)
	}
	none(t, ch)
}

// A worker's status note wakes every waiter of the orders it names at once,
// before any event is published.
func TestHubStatusNote(t *testing.T) {
	e := newHubEnv(t)
	a := &order.Order{ID: uuid.New(), Status: order.StatusConfirmed}
	b := &order.Order{ID: uuid.New(), Status: order.StatusRejected, RejectReason: order.RejectOutOfStock}
	cha, stopA := e.hub.Wait(a.ID)
	defer stopA()
	chb, stopB := e.hub.Wait(b.ID)
	defer stopB()
	if err := natsbus.NotifyStatus(e.nc, []*order.Order{a, b, {ID: uuid.New(), Status: order.StatusConfirmed}}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		ch   <-chan *order.Order
		want *order.Order
	}{{cha, a}, {chb, b}} {
		select {
		case got := <-w.ch:
			if got.ID != w.want.ID || got.Status != w.want.Status {
				t.Errorf("got %s %s, want %s %s", got.ID, got.Status, w.want.ID, w.want.Status)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no note for order %s", w.want.ID)
		}
	}
}
