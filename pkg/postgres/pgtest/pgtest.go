// Package pgtest gives each test a fresh, migrated PostgreSQL database on the
// local server, dropped when the test ends, so that test packages run in
// parallel without sharing state.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the driver

	"github.com/flashsale/orderd/pkg/postgres"
)

// DefaultURL is the server tests use unless TEST_DATABASE_URL names another;
// scripts/deps.sh creates the role.
const DefaultURL = "postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable"

// ServerURL returns the URL of the test server's maintenance database.
func ServerURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// New creates a fresh database, migrates it up, and returns its URL and an
// open pool. Both are dropped in tb.Cleanup. It fails the test if the server
// cannot be reached: run scripts/deps.sh (make test does).
func New(tb testing.TB) (string, *postgres.DB) {
	tb.Helper()
	ctx := context.Background()
	admin, err := sqlx.Open("postgres", ServerURL())
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	defer admin.Close()
	name := "orderd_test_" + randomHex(6)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database (is PostgreSQL running? run scripts/deps.sh): %v", err)
	}
	u, _ := url.Parse(ServerURL())
	u.Path = "/" + name
	dsn := u.String()
	db, err := postgres.Open(ctx, dsn, 20)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		db.Close()
		a, err := sqlx.Open("postgres", ServerURL())
		if err != nil {
			return
		}
		defer a.Close()
		a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	if err := postgres.Migrate(ctx, db.DB.DB, "up", io.Discard); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return dsn, db
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("pgtest: %v", err))
	}
	return hex.EncodeToString(b)
}

// Ping checks that the test server answers, for a TestMain that wants one
// clear message when PostgreSQL is not running.
func Ping(ctx context.Context) error {
	db, err := postgres.Open(ctx, ServerURL(), 1)
	if err != nil {
		return err
	}
	return db.Close()
}
