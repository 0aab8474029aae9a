package natsbus

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/flashsale/orderd/pkg/order"
)

// HubSubject is what a Hub subscribes to: every order event on
// ORDER_EVENTS (orders.events.order.<status>). stock.changed events, which
// no order waiter wants, are not delivered to it at all.
const HubSubject = "orders.events.order.>"

// StatusSubject carries the workers' status notes: right after a batch is
// committed and cached, a worker publishes the batch's decided orders as one
// JSON array on this core NATS subject (not a stream: it is a wake-up, not a
// record). Waiters see a decision at once instead of after the outbox relay
// has published its event; the event still arrives later and changes
// nothing, since statuses only move forward.
const StatusSubject = "orders.status"

// NotifyStatus publishes orders on StatusSubject. It is best effort: a lost
// note only delays waiters until the event or their next re-read.
func NotifyStatus(nc *nats.Conn, orders []*order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	data, err := json.Marshal(orders)
	if err != nil {
		return fmt.Errorf("status note: %w", err)
	}
	return nc.Publish(StatusSubject, data)
}

// HubBuffer is how many changes one waiter's channel holds. An order changes
// status at most three times, so a waiter that reads at all never loses one;
// a waiter that does not read loses the oldest, never the newest.
const HubBuffer = 4

// Hub wakes the ingress's long-polls and SSE streams when an order changes.
// It holds one core NATS subscription (not a JetStream consumer: it needs no
// history and no acks, and every ingress process gets every event) to the
// order events the outbox relay publishes, and hands each event's order to
// the local waiters of that order (the event's CloudEvents subject).
//
// The subscription's callback never blocks: a waiter whose buffer is full
// loses its oldest change. Events published while the connection is down
// are missed, so waiters also re-read the status cache now and then.
type Hub struct {
	subs    []*nats.Subscription
	log     *slog.Logger
	mu      sync.Mutex
	closed  bool
	waiters map[uuid.UUID]map[*hubWaiter]struct{}
	count   atomic.Int64 // waiters registered, read without the lock
	dropped atomic.Int64
	recent  recentOrders // guarded by mu
}

// HubRecent is how many orders' latest status a Hub remembers.
const HubRecent = 1 << 17

// recentOrders remembers the latest status the hub saw of the most recent
// orders, oldest forgotten first.
type recentOrders struct {
	ring   []uuid.UUID
	next   int
	latest map[uuid.UUID]*order.Order
}

func (r *recentOrders) remember(o *order.Order) {
	if old, ok := r.latest[o.ID]; ok {
		if order.StatusRank(o.Status) > order.StatusRank(old.Status) {
			r.latest[o.ID] = o
		}
		return
	}
	if r.ring == nil {
		r.ring = make([]uuid.UUID, HubRecent)
		r.latest = make(map[uuid.UUID]*order.Order)
	}
	if evict := r.ring[r.next]; evict != uuid.Nil {
		delete(r.latest, evict)
	}
	r.ring[r.next] = o.ID
	r.next = (r.next + 1) % len(r.ring)
	r.latest[o.ID] = o
}

type hubWaiter struct {
	ch chan *order.Order
}

// NewHub subscribes to HubSubject on nc. Close unsubscribes.
func NewHub(nc *nats.Conn, log *slog.Logger) (*Hub, error) {
	if log == nil {
		log = slog.Default()
	}
	h := &Hub{log: log, waiters: make(map[uuid.UUID]map[*hubWaiter]struct{})}
	for subject, cb := range map[string]nats.MsgHandler{HubSubject: h.deliver, StatusSubject: h.deliverNote} {
		sub, err := nc.Subscribe(subject, cb)
		if err != nil {
			h.unsubscribe()
			return nil, fmt.Errorf("hub: subscribe %s: %w", subject, err)
		}
		h.subs = append(h.subs, sub)
		// The callback is quick; a burst of a flash sale's decisions may
		// still queue up. Allow a large backlog rather than drop events as
		// a slow consumer.
		if err := sub.SetPendingLimits(1<<20, 512<<20); err != nil {
			h.unsubscribe()
			return nil, fmt.Errorf("hub: pending limits: %w", err)
		}
	}
	// Make sure the server has the subscriptions before anyone waits on them.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		h.unsubscribe()
		return nil, fmt.Errorf("hub: flush subscription: %w", err)
	}
	return h, nil
}

func (h *Hub) unsubscribe() {
	for _, sub := range h.subs {
		if err := sub.Unsubscribe(); err != nil {
			h.log.Debug("hub: unsubscribe", "err", err)
		}
	}
}

// Wait returns a channel that receives the order each time an event about
// order id arrives, and a function that stops the delivery (call it once
// done; it is safe to call more than once). The orders received are shared
// between waiters and must not be modified. The channel is closed when the
// hub is closed, so that streams end on shutdown.
func (h *Hub) Wait(id uuid.UUID) (<-chan *order.Order, func()) {
	w := &hubWaiter{ch: make(chan *order.Order, HubBuffer)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(w.ch)
		return w.ch, func() {}
	}
	set := h.waiters[id]
	if set == nil {
		set = make(map[*hubWaiter]struct{}, 1)
		h.waiters[id] = set
	}
	set[w] = struct{}{}
	h.count.Add(1)
	h.mu.Unlock()
	return w.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		set := h.waiters[id]
		if _, ok := set[w]; !ok {
			return
		}
		delete(set, w)
		if len(set) == 0 {
			delete(h.waiters, id)
		}
		h.count.Add(-1)
	}
}

// Recent returns the latest state the hub saw of order id, or nil. The
// status cache can lag an order's event by a moment (the worker writes it
// after the commit that the relay publishes); a reader that takes the later
// of the two never sees a status go back after a long-poll answered it.
func (h *Hub) Recent(id uuid.UUID) *order.Order {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.recent.latest[id]
}

// Waiting returns the number of registered waiters.
func (h *Hub) Waiting() int { return int(h.count.Load()) }

// Dropped returns how many changes were dropped because a waiter's buffer
// was full.
func (h *Hub) Dropped() int64 { return h.dropped.Load() }

// Close unsubscribes and closes every waiter's channel. It is safe to call
// more than once.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	waiters := h.waiters
	h.waiters = nil
	h.mu.Unlock()
	h.unsubscribe()
	for _, set := range waiters {
		for w := range set {
			close(w.ch)
			h.count.Add(-1)
		}
	}
}

// hubEvent is the part of a CloudEvent the hub reads.
type hubEvent struct {
	Type    string          `json:"type"`
	Subject string          `json:"subject"`
	Data    json.RawMessage `json:"data"`
}

// deliver is the subscription's callback.
func (h *Hub) deliver(m *nats.Msg) {
	var ev hubEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		h.log.Warn("hub: undecodable event", "subject", m.Subject, "err", err)
		return
	}
	if !strings.HasPrefix(ev.Type, "order.") {
		return
	}
	id, err := uuid.Parse(ev.Subject)
	if err != nil {
		return
	}
	var o order.Order
	if err := json.Unmarshal(ev.Data, &o); err != nil || o.ID != id {
		h.log.Warn("hub: event without its order", "subject", m.Subject, "order", id, "err", err)
		return
	}
	h.hand(&o)
}

// deliverNote is the callback of the workers' status notes.
func (h *Hub) deliverNote(m *nats.Msg) {
	var orders []*order.Order
	if err := json.Unmarshal(m.Data, &orders); err != nil {
		h.log.Warn("hub: undecodable status note", "err", err)
		return
	}
	for _, o := range orders {
		h.hand(o)
	}
}

// hand remembers o and gives it to the waiters of its order.
func (h *Hub) hand(o *order.Order) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.recent.remember(o)
	set := h.waiters[o.ID]
	for w := range set {
		select {
		case w.ch <- o:
			continue
		default:
		}
		// Full: drop the oldest so that the newest (the latest status)
		// is always there.
		select {
		case <-w.ch:
			h.dropped.Add(1)
		default:
		}
		select {
		case w.ch <- o:
		default:
			h.dropped.Add(1)
		}
	}
}
