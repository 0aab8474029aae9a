package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/flashsale/orderd/pkg/postgres"
)

// runMigrate applies (up), rolls back one (down) or lists (status) the
// embedded migrations.
func runMigrate(ctx context.Context, cfg *Config, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) != 1 || (args[0] != "up" && args[0] != "down" && args[0] != "status") {
		return usageError{fmt.Errorf("migrate wants one of up, down or status (see orderd migrate --help)")}
	}
	slog.SetDefault(log) // postgres.Migrate logs each applied version through slog
	db, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := postgres.Migrate(ctx, db.DB.DB, args[0], stdout); err != nil {
		return err
	}
	if args[0] != "status" {
		log.Info("migrations done", "command", args[0])
	}
	return nil
}
