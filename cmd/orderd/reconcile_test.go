package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// TestReconcileCommand runs orderd reconcile on a clean database (exit 0)
// and after stock moved behind the service's back (the drift is printed
// and the command fails).
func TestReconcileCommand(t *testing.T) {
	t.Parallel()
	dsn, db := pgtest.New(t)
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if _, err := db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock) VALUES ($1, 'Phone', 100, 'EUR', 10, 10)`, id); err != nil {
		t.Fatal(err)
	}
	args := []string{"reconcile", "--database-url", dsn, "--nats-url", ns.ClientURL(), "--log-level", "warn"}
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
	err = run(context.Background(), args, &out, io.Discard)
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
