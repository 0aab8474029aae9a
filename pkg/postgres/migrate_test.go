package postgres_test

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// TestMigrateUpDownUp runs every migration down and up again, and one step
// down and up, on a database pgtest migrated up.
func TestMigrateUpDownUp(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	sqlDB := db.DB.DB

	tables := func() []string {
		t.Helper()
		var names []string
		if err := db.Select(&names, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'goose_db_version' ORDER BY 1`); err != nil {
			t.Fatal(err)
		}
		return names
	}
	status := func() string {
		t.Helper()
		var out bytes.Buffer
		if err := postgres.Migrate(ctx, sqlDB, "status", &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	up := tables()
	for _, want := range []string{"skus", "addresses", "orders", "order_lines", "outbox"} {
		if !slices.Contains(up, want) {
			t.Fatalf("after up, no table %s among %v", want, up)
		}
	}
	if s := status(); strings.Contains(s, "pending") || !strings.Contains(s, "0001") {
		t.Errorf("status after up:\n%s", s)
	}

	// One step down and up again.
	if err := postgres.Migrate(ctx, sqlDB, "down", io.Discard); err != nil {
		t.Fatalf("down: %v", err)
	}
	if !strings.Contains(status(), "pending") {
		t.Errorf("after one down, nothing is pending:\n%s", status())
	}
	if err := postgres.Migrate(ctx, sqlDB, "up", io.Discard); err != nil {
		t.Fatalf("up after down: %v", err)
	}

	// All the way down: every table is gone.
	if err := postgres.Migrate(ctx, sqlDB, "reset", io.Discard); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if left := tables(); len(left) != 0 {
		t.Errorf("after reset, tables remain: %v", left)
	}
	var seqs int
	if err := db.Get(&seqs, `SELECT count(*) FROM pg_sequences WHERE schemaname = 'public' AND sequencename = 'order_number_seq'`); err != nil || seqs != 0 {
		t.Errorf("after reset, order_number_seq remains (%d, %v)", seqs, err)
	}
	if s := status(); strings.Contains(s, "applied") {
		t.Errorf("status after reset:\n%s", s)
	}
	// Down with nothing applied is no error.
	if err := postgres.Migrate(ctx, sqlDB, "down", io.Discard); err != nil {
		t.Errorf("down at version 0: %v", err)
	}

	// And up again, to the same schema; up twice is no error.
	for range 2 {
		if err := postgres.Migrate(ctx, sqlDB, "up", io.Discard); err != nil {
			t.Fatalf("up again: %v", err)
		}
	}
	if again := tables(); strings.Join(again, ",") != strings.Join(up, ",") {
		t.Errorf("tables after up, down, up: %v, want %v", again, up)
	}
	if _, err := db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock) VALUES (gen_random_uuid(), 'a', 1, 'EUR', 1, 1)`); err != nil {
		t.Errorf("the schema after up, down, up does not take a SKU: %v", err)
	}
	if err := postgres.Migrate(ctx, sqlDB, "sideways", io.Discard); err == nil {
		t.Error("an unknown command is no error")
	}
}
