package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// TestMain checks once that PostgreSQL and Redis answer, so that a missing
// dependency is one clear message, and removes the orderd binary the
// out-of-process tests built.
func TestMain(m *testing.M) {
	// pgtest logs every migration at INFO.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := ping(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e tests need PostgreSQL and Redis (run scripts/deps.sh): %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	removeBinary()
	os.Exit(code)
}

func ping(ctx context.Context) error {
	if err := pgtest.Ping(ctx); err != nil {
		return err
	}
	return redistest.Ping(ctx)
}
