package ingress

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

// TestMain checks once that the local PostgreSQL and Redis answer, so that a
// missing dependency is one clear message instead of a failure per test.
func TestMain(m *testing.M) {
	// pgtest logs every migration at INFO; keep the output for what matters.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := ping(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ingress tests need PostgreSQL and Redis (run scripts/deps.sh): %v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func ping(ctx context.Context) error {
	if err := pgtest.Ping(ctx); err != nil {
		return err
	}
	return redistest.Ping(ctx)
}
