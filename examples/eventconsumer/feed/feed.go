// Package feed is an example downstream consumer of the order processor's
// events: a durable JetStream consumer on ORDER_EVENTS that hands each
// CloudEvent to a handler once, however often JetStream delivers it.
//
// Delivery from JetStream is at least once: a message whose ack was lost, a
// consumer that crashed after its work and before its ack, or an event the
// relay published again after its own crash beyond the stream's dedupe
// window all come back. Every event's id is unique and stable, so a consumer
// dedupes on it. This example keeps the ids it handled in memory (Seen); a
// real consumer records the id in the same transaction as the effect of the
// event (for example a processed_events table with the id as primary key),
// so that a crash between the two cannot happen.
package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// Event is one delivered event: the CloudEvents envelope and its raw data
// (an order for order.* types, a stock change for stock.changed).
type Event struct {
	order.Event
	Data json.RawMessage `json:"data"`
}

// Order decodes the data of an order.* event.
func (e *Event) Order() (*order.Order, error) {
	var o order.Order
	if err := json.Unmarshal(e.Data, &o); err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return &o, nil
}

// Handler does the consumer's work for one event. An error makes the event
// come back later (it is not marked as seen).
type Handler func(ctx context.Context, ev *Event) error

// Config configures a consumer. Zero values take the defaults.
type Config struct {
	Durable        string        // the durable consumer's name (default "eventconsumer")
	FilterSubjects []string      // default: every event, orders.events.>
	AckWait        time.Duration // default 30s
	MaxDeliver     int           // default 20
	Remember       int           // how many handled ids Seen keeps (default 100000)
}

// Consumer consumes ORDER_EVENTS with a durable consumer.
type Consumer struct {
	cons    jetstream.Consumer
	handler Handler
	log     *slog.Logger
	seen    *Seen
	cfg     Config
}

// New creates or updates the durable consumer on ORDER_EVENTS (the stream
// must exist) and returns a consumer that runs handler.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, handler Handler, log *slog.Logger) (*Consumer, error) {
	if cfg.Durable == "" {
		cfg.Durable = "eventconsumer"
	}
	if len(cfg.FilterSubjects) == 0 {
		cfg.FilterSubjects = []string{"orders.events.>"}
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 20
	}
	if cfg.Remember <= 0 {
		cfg.Remember = 100_000
	}
	if log == nil {
		log = slog.Default()
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, natsbus.EventStream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		Description:    "example downstream consumer of order events",
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     cfg.MaxDeliver,
		FilterSubjects: cfg.FilterSubjects,
	})
	if err != nil {
		return nil, fmt.Errorf("event consumer %s: %w", cfg.Durable, err)
	}
	return &Consumer{cons: cons, handler: handler, log: log, seen: NewSeen(cfg.Remember), cfg: cfg}, nil
}

// Run consumes until ctx is done, then drains: no new messages, the
// handler finishes the one it has.
func (c *Consumer) Run(ctx context.Context) error {
	cc, err := c.cons.Consume(func(m jetstream.Msg) { c.handle(ctx, m) })
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (c *Consumer) handle(ctx context.Context, m jetstream.Msg) {
	var ev Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.ID == uuid.Nil {
		c.log.Error("not an event: dropped", "subject", m.Subject(), "err", err)
		m.TermWithReason("not a CloudEvent")
		return
	}
	if c.seen.Has(ev.ID) {
		c.log.Debug("duplicate event skipped", "id", ev.ID, "type", ev.Type)
		m.Ack()
		return
	}
	if err := c.handler(context.WithoutCancel(ctx), &ev); err != nil {
		delay := time.Second
		if md, err := m.Metadata(); err == nil {
			delay = min(time.Duration(md.NumDelivered)*time.Second, 30*time.Second)
		}
		c.log.Warn("handler failed; the event comes back", "id", ev.ID, "type", ev.Type, "err", err, "retry_in", delay)
		m.NakWithDelay(delay)
		return
	}
	c.seen.Add(ev.ID)
	if err := m.Ack(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		c.log.Warn("ack failed; the event may come back and be skipped", "id", ev.ID, "err", err)
	}
}

// Seen remembers the last n event ids handled, in memory.
type Seen struct {
	mu   sync.Mutex
	n    int
	ids  map[uuid.UUID]struct{}
	ring []uuid.UUID
	next int
}

// NewSeen returns a set that remembers n ids.
func NewSeen(n int) *Seen {
	return &Seen{n: n, ids: make(map[uuid.UUID]struct{}, n), ring: make([]uuid.UUID, n)}
}

// Has reports whether id was added and not forgotten yet.
func (s *Seen) Has(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

// Add remembers id, forgetting the oldest when full.
func (s *Seen) Add(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return
	}
	if old := s.ring[s.next]; old != uuid.Nil {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.ids[id] = struct{}{}
	s.next = (s.next + 1) % s.n
}
