package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// EventScope is what the stream check looks for.
type EventScope struct {
	// Accepted maps each order answered 202 to the decision the client saw
	// (confirmed or rejected), or "" when it saw none.
	Accepted map[uuid.UUID]order.Status
	Since    time.Time     // read the stream from this time (the run's start, less some slack)
	Wait     time.Duration // how long to wait for missing decision events
	Settle   time.Duration // once nothing is pending, how long to wait for more before giving up on missing ones
}

// EventReport is what the ORDER_EVENTS stream showed.
type EventReport struct {
	Checks     []Check
	Events     int // decision events read (all orders)
	Duplicates int // events delivered again with an id already seen
	Missing    int // accepted orders without a decision event
	Multiple   int // accepted orders with more than one distinct decision event
	Mismatched int // decision events that disagree with the status the client saw
}

// decisionSubjects are the subjects of decision events.
var decisionSubjects = []string{
	order.EventSubject(order.EventConfirmed),
	order.EventSubject(order.EventRejected),
}

// cloudEvent is the part of an event the check reads.
type cloudEvent struct {
	ID      string          `json:"id"`
	Type    order.EventType `json:"type"`
	Subject string          `json:"subject"`
}

// verifyEvents reads the decision events of ORDER_EVENTS with an ordered
// consumer and checks that every accepted order has exactly one (after
// dedupe by event id) and that it agrees with what the client saw. It
// waits up to s.Wait for events that the outbox relay has not published
// yet. It returns an error only when the stream cannot be read.
func verifyEvents(ctx context.Context, js jetstream.JetStream, s EventScope) (EventReport, error) {
	var r EventReport
	if s.Settle <= 0 {
		s.Settle = 5 * time.Second
	}
	since := s.Since
	cons, err := js.OrderedConsumer(ctx, natsbus.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: decisionSubjects,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return r, fmt.Errorf("read %s: %w", natsbus.EventStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return r, fmt.Errorf("read %s: %w", natsbus.EventStream, err)
	}
	defer it.Stop()

	seen := map[string]bool{}                               // event ids
	decisions := map[uuid.UUID]map[string]order.EventType{} // accepted order -> distinct decision events
	var mismatched []string
	deadline := time.Now().Add(s.Wait)
	lastMsg := time.Now()
	pending := true // whether the stream holds more for the consumer, as far as we know
	for {
		now := time.Now()
		complete := !pending && len(decisions) == len(s.Accepted)
		if complete || ctx.Err() != nil || now.After(deadline) || now.Sub(lastMsg) > s.Settle {
			break
		}
		msg, err := it.Next(jetstream.NextMaxWait(200 * time.Millisecond))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			pending = false
			continue
		}
		if err != nil {
			return r, fmt.Errorf("read %s: %w", natsbus.EventStream, err)
		}
		lastMsg = time.Now()
		if md, err := msg.Metadata(); err == nil {
			pending = md.NumPending > 0
		}
		var ev cloudEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.ID == "" {
			continue // not a CloudEvent: not ours to judge here
		}
		if seen[ev.ID] {
			r.Duplicates++
			continue
		}
		seen[ev.ID] = true
		r.Events++
		id, err := uuid.Parse(ev.Subject)
		if err != nil {
			continue
		}
		want, ours := s.Accepted[id]
		if !ours {
			continue // another run's order, or one whose 202 the run never saw
		}
		if decisions[id] == nil {
			decisions[id] = map[string]order.EventType{}
		}
		decisions[id][ev.ID] = ev.Type
		if got := decisionOf(ev.Type); want != "" && got != decisionOf(order.StatusEvent(want)) {
			mismatched = append(mismatched, fmt.Sprintf("order %s: event %s but the client saw %s", id, ev.Type, want))
		}
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}

	var missing, multiple []string
	for id := range s.Accepted {
		switch n := len(decisions[id]); {
		case n == 0:
			missing = append(missing, id.String())
		case n > 1:
			types := ""
			for eid, t := range decisions[id] {
				types += fmt.Sprintf(" %s(%s)", t, eid)
			}
			multiple = append(multiple, fmt.Sprintf("order %s:%s", id, types))
		}
	}
	r.Missing, r.Multiple, r.Mismatched = len(missing), len(multiple), len(mismatched)
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d accepted orders have no decision event after %s (for example %s)", len(missing), s.Wait, missing[0]))
	}
	if len(multiple) > 0 {
		problems = append(problems, fmt.Sprintf("%d accepted orders have more than one decision event (%s)", len(multiple), multiple[0]))
	}
	r.Checks = append(r.Checks, failIf(CheckOneDecisionEvent, problems), failIf(CheckDecisionMatches, mismatched))
	return r, nil
}

// decisionOf maps a status event to the decision it implies: paid and
// expired orders were confirmed first.
func decisionOf(t order.EventType) order.EventType {
	switch t {
	case order.EventConfirmed, order.EventPaid, order.EventExpired:
		return order.EventConfirmed
	}
	return t
}
