package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// unmigratedDatabase creates a database with no table (pgtest.New migrates
// its own) and returns its URL; it is dropped when the test ends.
func unmigratedDatabase(t *testing.T) string {
	t.Helper()
	admin, err := sql.Open("postgres", pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := "orderd_test_migrate_" + strings.ToLower(rand.Text()[:10])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database (is PostgreSQL running? run scripts/deps.sh): %v", err)
	}
	t.Cleanup(func() {
		if a, err := sql.Open("postgres", pgtest.ServerURL()); err == nil {
			a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			a.Close()
		}
	})
	u, err := url.Parse(pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// tablesIn lists the tables of the database at dsn.
func tablesIn(t *testing.T, dsn string) []string {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// `orderd migrate status` on a database never migrated says so and creates
// nothing; `orderd migrate wait` (the Kubernetes pods' init container)
// waits, creating nothing either, until another process has applied every
// migration, then exits 0.
func TestMigrateStatusAndWaitOnAnEmptyDatabase(t *testing.T) {
	t.Parallel()
	dsn := unmigratedDatabase(t)
	ctx := context.Background()

	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--database-url", dsn, "status"}, &out, io.Discard); err != nil {
		t.Fatalf("migrate status: %v", err)
	}
	if !strings.Contains(out.String(), "no migrations applied") || !strings.Contains(out.String(), "0001") {
		t.Errorf("migrate status printed:\n%s", out.String())
	}

	// Nothing applied: wait does not return before its context ends.
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := run(short, []string{"migrate", "--database-url", dsn, "wait"}, io.Discard, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("migrate wait on an empty database = %v, want it to wait until its context ends", err)
	}
	if tables := tablesIn(t, dsn); len(tables) != 0 {
		t.Fatalf("status and wait created tables %q", tables)
	}

	// Another process migrates while wait waits: wait then succeeds.
	done := make(chan error, 1)
	waitCtx, cancelWait := context.WithTimeout(ctx, 2*time.Minute) // a bound, not a measure
	defer cancelWait()
	go func() {
		done <- run(waitCtx, []string{"migrate", "--database-url", dsn, "wait"}, io.Discard, io.Discard)
	}()
	if err := run(ctx, []string{"migrate", "--database-url", dsn, "up"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("migrate wait after up: %v", err)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, err := postgres.PendingMigrations(ctx, db); err != nil || n != 0 {
		t.Errorf("after up, %d migrations pending (%v)", n, err)
	}
}
