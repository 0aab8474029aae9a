package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// cloudEvent is an event on ORDER_EVENTS as a downstream consumer reads it.
type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          uuid.UUID       `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Data        json.RawMessage `json:"data"`
	msgSubject  string          // the NATS subject it was on
}

// readEvents reads every event on ORDER_EVENTS whose type is one of types,
// in stream order, with an ordered consumer (what a downstream consumer
// replaying the stream does).
func readEvents(ctx context.Context, js jetstream.JetStream, types ...order.EventType) ([]cloudEvent, error) {
	subjects := make([]string, len(types))
	for i, typ := range types {
		subjects[i] = order.EventSubject(typ)
	}
	s, err := js.Stream(ctx, natsbus.EventStream)
	if err != nil {
		return nil, err
	}
	// How many there are now: the consumer reads that many.
	total, err := countEvents(ctx, js, types...)
	if err != nil || total == 0 {
		return nil, err
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, err
	}
	out := make([]cloudEvent, 0, total)
	for uint64(len(out)) < total {
		batch, err := c.Fetch(int(min(total-uint64(len(out)), 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev cloudEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				return nil, fmt.Errorf("event on %s is not JSON: %v: %s", m.Subject(), err, m.Data())
			}
			ev.msgSubject = m.Subject()
			out = append(out, ev)
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("read %d of %d events, then nothing", len(out), total)
		}
	}
	return out, nil
}

// countEvents returns how many events of types ORDER_EVENTS holds.
func countEvents(ctx context.Context, js jetstream.JetStream, types ...order.EventType) (uint64, error) {
	s, err := js.Stream(ctx, natsbus.EventStream)
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, typ := range types {
		subj := order.EventSubject(typ)
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			return 0, err
		}
		total += info.State.Subjects[subj]
	}
	return total, nil
}

// decisionEvents is what a downstream consumer learns of order decisions:
// the order.confirmed and order.rejected events, deduplicated on the
// CloudEvent id, grouped by order (the CloudEvent subject).
type decisionEvents struct {
	Raw      int                        // messages read, duplicates included
	Distinct int                        // distinct CloudEvent ids
	ByOrder  map[uuid.UUID][]cloudEvent // distinct events of each order
}

// readDecisions reads the decision events and checks each one's envelope.
func readDecisions(ctx context.Context, js jetstream.JetStream) (*decisionEvents, error) {
	evs, err := readEvents(ctx, js, order.EventConfirmed, order.EventRejected)
	if err != nil {
		return nil, err
	}
	d := &decisionEvents{Raw: len(evs), ByOrder: map[uuid.UUID][]cloudEvent{}}
	seen := map[uuid.UUID]bool{}
	for _, ev := range evs {
		if err := ev.check(); err != nil {
			return nil, err
		}
		if seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		d.Distinct++
		id := uuid.MustParse(ev.Subject)
		d.ByOrder[id] = append(d.ByOrder[id], ev)
	}
	return d, nil
}

// check checks a decision event's CloudEvents envelope and that its data
// is the order it names, in the status its type says.
func (ev *cloudEvent) check() error {
	if ev.SpecVersion != "1.0" || ev.ID == uuid.Nil || ev.Source == "" || ev.msgSubject != "orders.events."+ev.Type {
		return fmt.Errorf("event %+v: want specversion 1.0, an id, a source, and the subject orders.events.<type>", ev)
	}
	id, err := uuid.Parse(ev.Subject)
	if err != nil {
		return fmt.Errorf("event %s: subject %q is not an order id", ev.ID, ev.Subject)
	}
	o, err := ev.order()
	if err != nil {
		return err
	}
	if o.ID != id || string(order.StatusEvent(o.Status)) != ev.Type {
		return fmt.Errorf("event %s of type %s about order %s holds order %s in status %s", ev.ID, ev.Type, id, o.ID, o.Status)
	}
	return nil
}

// order decodes the event's data.
func (ev *cloudEvent) order() (*order.Order, error) {
	var o order.Order
	if err := json.Unmarshal(ev.Data, &o); err != nil {
		return nil, fmt.Errorf("event %s: data is not an order: %v", ev.ID, err)
	}
	return &o, nil
}

// awaitDecisionEvents waits up to d until every order of want has a
// decision event (the relay publishes them after the status is visible),
// and returns the events. It fails the test if they do not all arrive.
func awaitDecisionEvents(t *testing.T, js jetstream.JetStream, want map[uuid.UUID]order.Status, d time.Duration) *decisionEvents {
	t.Helper()
	var got *decisionEvents
	err := eventually(d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// Counting is cheap; reading them all is not: read once there may
		// be enough.
		n, err := countEvents(ctx, js, order.EventConfirmed, order.EventRejected)
		if err != nil {
			return err
		}
		if n < uint64(len(want)) {
			time.Sleep(200 * time.Millisecond)
			return fmt.Errorf("%d decision events on %s for %d orders", n, natsbus.EventStream, len(want))
		}
		if got, err = readDecisions(ctx, js); err != nil {
			return err
		}
		missing := 0
		for id := range want {
			if len(got.ByOrder[id]) == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d orders have no decision event on %s", missing, len(want), natsbus.EventStream)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkOneDecisionEach fails the test unless the events hold exactly one
// decision per order of want, of the type of the order's status, and none
// for other orders.
func checkOneDecisionEach(t *testing.T, ev *decisionEvents, want map[uuid.UUID]order.Status) {
	t.Helper()
	if ev.Distinct != len(want) {
		t.Errorf("%d distinct decision events (%d messages), want %d: one per order", ev.Distinct, ev.Raw, len(want))
	}
	bad := 0
	for id, evs := range ev.ByOrder {
		st, ok := want[id]
		switch {
		case !ok:
			t.Errorf("decision event for order %s, which no buyer placed", id)
		case len(evs) != 1 || evs[0].Type != string(order.StatusEvent(st)):
			if bad++; bad <= 10 {
				types := make([]string, len(evs))
				for i, e := range evs {
					types[i] = e.Type + " " + e.ID.String()
				}
				t.Errorf("order %s (%s over HTTP) has decision events %q, want one %s", id, st, types, order.StatusEvent(st))
			}
		}
	}
	if bad > 10 {
		t.Errorf("... and %d more orders with wrong decision events", bad-10)
	}
	if ev.Raw != ev.Distinct {
		t.Logf("%d decision event messages for %d distinct events (duplicates a consumer drops by id)", ev.Raw, ev.Distinct)
	}
}

// repeatedDecisions describes the orders of db whose decision event was
// written more than once ("" if none). A repeated decision writes the same
// event id, which the outbox, JetStream's dedupe and readDecisions all drop
// as a copy: the stream cannot show it, the outbox's count of writes
// (order_decisions) does.
func repeatedDecisions(ctx context.Context, db *postgres.DB) (string, error) {
	var r struct {
		N       int            `db:"n"`
		Example sql.NullString `db:"example"`
		Writes  sql.NullInt64  `db:"writes"`
	}
	err := db.GetContext(ctx, &r, `SELECT count(*) AS n, min(order_id::text) AS example, max(writes) AS writes FROM order_decisions WHERE writes > 1`)
	if err != nil || r.N == 0 {
		return "", err
	}
	return fmt.Sprintf("%d orders decided more than once (decision event written up to %d times; for example order %s)", r.N, r.Writes.Int64, r.Example.String), nil
}

// checkDecidedOnceAtEnd fails the test, when it ends, if an order of db
// was decided more than once: every test's one-decision check, beside
// checkOneDecisionEach's look at the stream.
func checkDecidedOnceAtEnd(t *testing.T, db *postgres.DB) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		problem, err := repeatedDecisions(ctx, db)
		switch {
		case err != nil:
			t.Errorf("count repeated decisions: %v", err)
		case problem != "":
			t.Error(problem)
		}
	})
}
