// Package postgres holds the service's PostgreSQL stores, written with sqlx
// over lib/pq. It translates driver errors into the domain's errors
// (order.Error) and applies the embedded migrations with pressly/goose.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/flashsale/orderd/migrations"
	"github.com/flashsale/orderd/pkg/batch"
	"github.com/flashsale/orderd/pkg/order"
)

// DB is the service's connection pool.
type DB struct {
	*sqlx.DB
	facts    *batch.Batcher[factsQuery, order.CheckoutFacts] // CheckoutFacts' group commit (checkout_facts.go)
	defaults *batch.Batcher[string, *order.Address]          // DefaultAddress's (addresses.go)
	claims   *batch.Batcher[order.KeyClaim, *order.KeyClaim] // ClaimKey's (checkout_facts.go)

	claimsPruned atomic.Int64 // when claims were last pruned, in Unix nanoseconds
}

// Open connects to the database at dsn and checks that it answers.
func Open(ctx context.Context, dsn string, maxConns int) (*DB, error) {
	db, err := sqlx.Open("postgres", withOneRoundTrip(dsn))
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if maxConns > 0 {
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(maxConns)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping postgres: %w", err)
	}
	d := &DB{DB: db}
	d.facts = newFactsBatcher(d)
	d.defaults = newDefaultsBatcher(d)
	d.claims = newClaimsBatcher(d)
	return d, nil
}

// withOneRoundTrip adds binary_parameters=yes to a URL DSN that does not
// say otherwise: lib/pq then sends a parameterised query's parse, bind and
// execute in one round trip instead of preparing it first in another,
// which halves the round trips of the ingress's small queries.
func withOneRoundTrip(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return dsn
	}
	q := u.Query()
	if q.Get("binary_parameters") != "" {
		return dsn
	}
	q.Set("binary_parameters", "yes")
	u.RawQuery = q.Encode()
	return u.String()
}

// Ping checks that the database answers (for readiness).
func (db *DB) Ping(ctx context.Context) error { return db.PingContext(ctx) }

// Migrate runs a goose command on the embedded migrations: "up", "down",
// "status", "redo" or "reset". Output (status) goes to out.
//
// Up, down and reset hold a PostgreSQL session advisory lock while they run
// (goose's session locker), so several processes that migrate the same
// database at once apply each migration once: the first takes the lock, the
// others wait for it (up to migrateLockWait), then find nothing to do.
// Status takes no lock and writes nothing (migrationStates).
func Migrate(ctx context.Context, db *sql.DB, command string, out io.Writer) error {
	if command == "status" {
		return migrateStatus(ctx, db, out)
	}
	// goose retries pg_try_advisory_lock every period for failureThreshold
	// times: a waiter notices a released lock within a second.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, uint64(migrateLockWait/time.Second)))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	switch command {
	case "up":
		res, err := p.Up(ctx)
		for _, r := range res {
			slog.InfoContext(ctx, "migrated", "version", r.Source.Version, "direction", r.Direction, "took", r.Duration)
		}
		return wrapMigrate(err)
	case "down":
		_, err := p.Down(ctx)
		return wrapMigrate(err)
	case "reset":
		_, err := p.DownTo(ctx, 0)
		return wrapMigrate(err)
	}
	return fmt.Errorf("unknown migrate command %q (want up, down, status or reset)", command)
}

// migrateLockWait is how long a migration waits for another process's to
// finish before it gives up.
const migrateLockWait = 5 * time.Minute

// migrateStatus writes each embedded migration and whether it is applied.
func migrateStatus(ctx context.Context, db *sql.DB, out io.Writer) error {
	st, versioned, err := migrationStates(ctx, db)
	if err != nil {
		return err
	}
	if !versioned {
		fmt.Fprintf(out, "no migrations applied (no %s table)\n", goose.DefaultTablename)
	}
	for _, s := range st {
		applied := "pending"
		if s.State == goose.StateApplied {
			applied = "applied " + s.AppliedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%04d  %-24s  %s\n", s.Source.Version, s.Source.Path, applied)
	}
	return nil
}

// PendingMigrations returns how many of the embedded migrations the
// database has not applied. It reads and writes nothing else, takes no
// lock, and works with a role that may not change the schema: a process
// waits with it for the migrations another one runs (orderd migrate wait).
func PendingMigrations(ctx context.Context, db *sql.DB) (int, error) {
	st, _, err := migrationStates(ctx, db)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range st {
		if s.State != goose.StateApplied {
			n++
		}
	}
	return n, nil
}

// migrationStates returns each embedded migration's state, and whether the
// database has goose's version table at all. goose's own Status creates
// that table when it is missing; this looks first, and on a database that
// has none reports every migration pending, so that it never writes.
func migrationStates(ctx context.Context, db *sql.DB) ([]*goose.MigrationStatus, bool, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		return nil, false, fmt.Errorf("migrations: %w", err)
	}
	store, err := database.NewStore(database.DialectPostgres, goose.DefaultTablename)
	if err != nil {
		return nil, false, fmt.Errorf("migrations: %w", err)
	}
	ext, ok := store.(database.StoreExtender)
	if !ok {
		return nil, false, fmt.Errorf("migrations: goose's postgres store cannot tell whether %s exists", goose.DefaultTablename)
	}
	exists, err := ext.TableExists(ctx, db)
	if err != nil {
		return nil, false, fmt.Errorf("migrate status: %w", err)
	}
	if !exists {
		var st []*goose.MigrationStatus
		for _, s := range p.ListSources() {
			st = append(st, &goose.MigrationStatus{Source: s, State: goose.StatePending})
		}
		return st, false, nil
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, true, fmt.Errorf("migrate status: %w", err)
	}
	return st, true, nil
}

func wrapMigrate(err error) error {
	if err != nil && !errors.Is(err, goose.ErrNoNextVersion) && !errors.Is(err, goose.ErrNoCurrentVersion) {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Tx runs fn in a transaction, committing if it returns nil and rolling back
// otherwise.
func (db *DB) Tx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return translate(fmt.Errorf("begin: %w", err))
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return translate(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// translate turns driver errors into domain errors where they mean
// something to the caller: a unique violation is ECONFLICT, a foreign key or
// check violation is EINVALID, no rows is ENOTFOUND, a connection failure is
// EUNAVAILABLE. Anything else is returned as is.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return &order.Error{Code: order.ENOTFOUND, Message: "not found"}
	}
	var pqe *pq.Error
	if errors.As(err, &pqe) {
		switch pqe.Code.Class() {
		case "08", "57": // connection exception, operator intervention (shutdown)
			return fmt.Errorf("%w: %w", order.Errorf(order.EUNAVAILABLE, "the database is unavailable"), err)
		}
		switch pqe.Code.Name() {
		case "unique_violation":
			return fmt.Errorf("%w: %w", order.Errorf(order.ECONFLICT, "already exists"), err)
		case "foreign_key_violation", "check_violation", "not_null_violation":
			return fmt.Errorf("%w: %w", order.Errorf(order.EINVALID, "violates a constraint"), err)
		}
	}
	var netErr interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("%w: %w", order.Errorf(order.EUNAVAILABLE, "the database is unavailable"), err)
	}
	return err
}
