package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// TestReconcileCommand runs orderd reconcile on a clean database (exit 0)
// and after stock moved behind the service's back (the drift is printed
// and the command fails).
func TestReconcileCommand(t *testing.T) {
	t.Parallel()
	dsn, db := pgtest.New(t)
	id := uuid.New()
	if _, err := db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock) VALUES ($1, 'Phone', 100, 'EUR', 10, 10)`, id); err != nil {
		t.Fatal(err)
	}
	args := []string{"reconcile", "--database-url", dsn, "--log-level", "warn"}
	var out bytes.Buffer
	if err := run(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatalf("clean: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "no drift") || !strings.Contains(out.String(), id.String()) {
		t.Errorf("clean output:\n%s", out.String())
	}

	if _, err := db.Exec(`UPDATE skus SET stock = stock - 1 WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := run(context.Background(), args, &out, io.Discard)
	if !errors.Is(err, errDrift) {
		t.Fatalf("after drift: %v, want errDrift\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "DRIFT") || !strings.Contains(out.String(), "1 of 1 SKUs drift") {
		t.Errorf("drift output:\n%s", out.String())
	}

	if err := run(context.Background(), []string{"reconcile", "extra"}, io.Discard, io.Discard); !errors.As(err, new(usageError)) {
		t.Errorf("an argument: %v, want a usage error", err)
	}
}

// relayEvents writes evs to the outbox and relays them as the worker's
// relay does: published in atomic batches, then deleted, which counts what
// they hold.
func relayEvents(t *testing.T, db *postgres.DB, nc *nats.Conn, evs []order.Event) {
	t.Helper()
	ctx := context.Background()
	for len(evs) > 0 {
		n := min(len(evs), natsbus.MaxAtomicBatch)
		msgs := make([]postgres.OutboxMessage, n)
		for i, ev := range evs[:n] {
			m, err := postgres.EventMessage(ev)
			if err != nil {
				t.Fatal(err)
			}
			msgs[i] = m
		}
		evs = evs[n:]
		tx := db.MustBegin()
		if err := postgres.InsertOutbox(ctx, tx, msgs); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		lock, err := db.TryRelayLock(ctx)
		if err != nil || lock == nil {
			t.Fatalf("relay lock: %v", err)
		}
		rows, err := lock.Pending(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		batch := make([]natsbus.Message, len(rows))
		for i, r := range rows {
			batch[i] = natsbus.Message{Subject: r.Subject, Data: r.Payload, MsgID: r.MsgID}
		}
		if err := natsbus.PublishAtomic(ctx, nc, batch); err != nil {
			t.Fatal(err)
		}
		if err := lock.Delete(ctx, rows); err != nil {
			t.Fatal(err)
		}
		lock.Release()
	}
}

// confirmedEvents returns n order.confirmed events of one unit each, of
// skus in turn.
func confirmedEvents(n int, skus []uuid.UUID) []order.Event {
	evs := make([]order.Event, n)
	now := time.Now()
	for i := range evs {
		o := &order.Order{ID: uuid.New(), Status: order.StatusConfirmed, DecidedAt: &now,
			Lines: []order.Line{{SKUID: skus[i%len(skus)], Quantity: 1, UnitPrice: 100, LineTotal: 100}}}
		evs[i] = order.OrderEvent(o, now)
	}
	return evs
}

// TestReconcileCostFlatInEventHistory reconciles a shop whose ORDER_EVENTS
// holds 20,000 order events, then again after 8 more: the work is counted
// in messages read from NATS, and is the same (none) however long the
// history. Reconciliation used to read the whole stream each time (a core
// for 30 s and a 503 on a few hundred thousand events; with 100,000 here,
// the 30 s deadline of the admin API passed under the race detector).
func TestReconcileCostFlatInEventHistory(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ns := natstest.Start(t)
	ctx := context.Background()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(ctx, js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	skus := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	for _, id := range skus {
		if _, err := db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock) VALUES ($1, 'Phone', 100, 'EUR', 1000000, 1000000)`, id); err != nil {
			t.Fatal(err)
		}
	}
	const history = 20_000
	relayEvents(t, db, nc, confirmedEvents(history, skus))
	st, err := js.Stream(ctx, natsbus.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != history {
		t.Fatalf("stream: %+v, %v; want %d events", info.State, err, history)
	}

	rec := newReconciler(db)
	reconcile := func(want int64) {
		t.Helper()
		before := nc.Stats().InMsgs
		rows, err := rec.Reconcile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if read := nc.Stats().InMsgs - before; read != 0 {
			t.Errorf("reconcile read %d messages from NATS; want none: its cost must not grow with the event history", read)
		}
		for _, r := range rows {
			if r.HeldByEvents == nil || *r.HeldByEvents != want {
				t.Errorf("SKU %s: held by events %v, want %d", r.SKUID, r.HeldByEvents, want)
			}
		}
	}
	reconcile(history / 4)
	relayEvents(t, db, nc, confirmedEvents(8, skus))
	reconcile(history/4 + 2)
}
