package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/flashsale/orderd/pkg/postgres"
)

// migrateCommands are the arguments of orderd migrate.
var migrateCommands = []string{"up", "down", "status", "wait"}

// migrateWaitPoll is how often migrate wait looks at the database.
const migrateWaitPoll = 2 * time.Second

// runMigrate applies (up), rolls back one (down) or lists (status) the
// embedded migrations, or waits until another process has applied them all
// (wait).
func runMigrate(ctx context.Context, cfg *Config, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) != 1 || !slices.Contains(migrateCommands, args[0]) {
		return usageError{fmt.Errorf("migrate wants one of up, down, status or wait (see orderd migrate --help)")}
	}
	slog.SetDefault(log) // postgres.Migrate logs each applied version through slog
	db, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer db.Close()
	if args[0] == "wait" {
		return waitForMigrations(ctx, db, log)
	}
	if err := postgres.Migrate(ctx, db.DB.DB, args[0], stdout); err != nil {
		return err
	}
	if args[0] != "status" {
		log.Info("migrations done", "command", args[0])
	}
	return nil
}

// waitForMigrations returns once every migration this binary embeds is
// applied, looking every migrateWaitPoll, or when ctx ends. It only reads:
// a pod's init container runs it as the service's role while a Job applies
// the migrations as the schema's owner (deploy/k8s).
func waitForMigrations(ctx context.Context, db *postgres.DB, log *slog.Logger) error {
	last := -1
	for {
		n, err := postgres.PendingMigrations(ctx, db.DB.DB)
		switch {
		case err != nil:
			log.Warn("migrate wait: cannot read the migrations' state", "err", err)
		case n == 0:
			log.Info("migrations applied")
			return nil
		case n != last:
			log.Info("migrate wait: migrations pending, waiting for orderd migrate up", "pending", n)
			last = n
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migrate wait: %w", ctx.Err())
		case <-time.After(migrateWaitPoll):
		}
	}
}
