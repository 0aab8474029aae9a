package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/order"
)

// EventHoldings reads the order events of ORDER_EVENTS, from the oldest
// kept to the last one stored when it starts, with an ordered consumer, and
// returns per SKU the quantity the events say orders hold: the lines of
// order.confirmed events minus those of the same orders' order.cancelled
// and order.expired events. It gives up after timeout (an error). Events
// older than the stream's max age are gone: the count is only true of a
// stream that still holds the whole sale.
func EventHoldings(ctx context.Context, js jetstream.JetStream, timeout time.Duration) (map[uuid.UUID]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := js.Stream(ctx, EventStream)
	if err != nil {
		return nil, fmt.Errorf("event holdings: %w", err)
	}
	subjects := []string{order.EventSubject(order.EventConfirmed), order.EventSubject(order.EventCancelled), order.EventSubject(order.EventExpired)}
	held := map[uuid.UUID]int64{}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("orders.events.>"))
	if err != nil {
		return nil, fmt.Errorf("event holdings: %w", err)
	}
	last, n := info.State.LastSeq, uint64(0)
	for _, s := range subjects {
		n += info.State.Subjects[s]
	}
	if n == 0 {
		return held, nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return nil, fmt.Errorf("event holdings: %w", err)
	}
	confirmed := map[uuid.UUID][]order.Line{}
	for {
		m, err := c.Next(jetstream.FetchContext(ctx))
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoMessages) {
				return nil, fmt.Errorf("event holdings: the events were not read in %v", timeout)
			}
			return nil, fmt.Errorf("event holdings: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("event holdings: %w", err)
		}
		var ev struct {
			Type order.EventType `json:"type"`
			Data order.Order     `json:"data"`
		}
		if err := json.Unmarshal(m.Data(), &ev); err == nil {
			switch ev.Type {
			case order.EventConfirmed:
				if _, ok := confirmed[ev.Data.ID]; !ok {
					confirmed[ev.Data.ID] = ev.Data.Lines
					for _, l := range ev.Data.Lines {
						held[l.SKUID] += l.Quantity
					}
				}
			case order.EventCancelled, order.EventExpired:
				if lines, ok := confirmed[ev.Data.ID]; ok && lines != nil {
					for _, l := range lines {
						held[l.SKUID] -= l.Quantity
					}
					confirmed[ev.Data.ID] = nil // released once
				}
			}
		}
		if md.NumPending == 0 || md.Sequence.Stream >= last {
			return held, nil
		}
	}
}
