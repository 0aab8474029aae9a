package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/flashsale/orderd/migrations"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// emptyDatabase creates a database with no table at all (pgtest.New
// migrates its databases) and returns its URL; it is dropped when the test
// ends.
func emptyDatabase(t *testing.T, name string) string {
	t.Helper()
	admin, err := sql.Open("postgres", pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name = "orderd_test_" + name + "_" + strings.ToLower(rand.Text()[:10])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database (is PostgreSQL running? run scripts/deps.sh): %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("postgres", pgtest.ServerURL())
		if err != nil {
			return
		}
		defer a.Close()
		a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	u, err := url.Parse(pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// migrationCount is the number of embedded migrations.
func migrationCount(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded migrations: %v %v", files, err)
	}
	return len(files)
}

// Several processes that start at once (pods of a Deployment, compose
// services) each run `migrate up`: the session lock lets one apply the
// migrations while the others wait, then find nothing left to do. Each
// migrator has a pool and a connection of its own, as a process would. On
// an empty database, and on one a release behind (its newest migration
// rolled back), where every process would otherwise apply the new
// migration at once.
func TestMigrateUpConcurrently(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		down int // migrations rolled back before the race
	}{{"empty", -1}, {"one_behind", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := emptyDatabase(t, "concurrent_"+tc.name)
			if tc.down >= 0 {
				prepare(t, dsn, tc.down)
			}
			raceMigrators(t, dsn, 6)
		})
	}
}

// prepare migrates the database at dsn up, then down n steps.
func prepare(t *testing.T, dsn string, n int) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := postgres.Migrate(ctx, db, "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := postgres.Migrate(ctx, db, "down", io.Discard); err != nil {
			t.Fatal(err)
		}
	}
}

// raceMigrators starts n migrators on dsn at once and checks that every
// one succeeds and that each migration was applied once.
func raceMigrators(t *testing.T, dsn string, n int) {
	t.Helper()
	ctx := context.Background()
	pools := make([]*sql.DB, n)
	for i := range pools {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.PingContext(ctx); err != nil { // connect before the start line
			t.Fatal(err)
		}
		pools[i] = db
	}
	var (
		start sync.WaitGroup
		done  sync.WaitGroup
		errs  = make([]error, n)
	)
	start.Add(1)
	for i, db := range pools {
		done.Go(func() {
			start.Wait()
			errs[i] = postgres.Migrate(ctx, db, "up", io.Discard)
		})
	}
	start.Done()
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}

	// Each migration was applied once: one row per version in goose's
	// table (besides its version 0), no version twice.
	var rows, versions int
	if err := pools[0].QueryRow(`SELECT count(*), count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0 AND is_applied`).Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if want := migrationCount(t); rows != want || versions != want {
		t.Errorf("goose_db_version holds %d applied rows of %d versions, want %d of %d: a migration ran twice or not at all", rows, versions, want, want)
	}
	var out bytes.Buffer
	if err := postgres.Migrate(ctx, pools[0], "status", &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "pending") {
		t.Errorf("status after the concurrent ups:\n%s", out.String())
	}
}

// `migrate status` on a database that was never migrated says so and lists
// every migration as pending, without creating goose's version table (or
// anything else): it reads, it does not write.
func TestMigrateStatusCreatesNothing(t *testing.T) {
	t.Parallel()
	dsn := emptyDatabase(t, "status_readonly")
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()

	var out bytes.Buffer
	if err := postgres.Migrate(ctx, db, "status", &out); err != nil {
		t.Fatalf("status on an empty database: %v", err)
	}
	var tables []string
	r, err := db.Query(`SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var n string
		if err := r.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if len(tables) != 0 {
		t.Errorf("status created tables %q", tables)
	}
	s := out.String()
	if !strings.Contains(s, "no migrations applied") {
		t.Errorf("status on an empty database does not say that no migration is applied:\n%s", s)
	}
	if n := strings.Count(s, "pending"); n != migrationCount(t) {
		t.Errorf("status lists %d pending migrations, want %d:\n%s", n, migrationCount(t), s)
	}
	if !strings.Contains(s, fmt.Sprintf("%04d", 1)) {
		t.Errorf("status does not list migration 0001:\n%s", s)
	}
}
