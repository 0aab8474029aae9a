//go:build !worker_landed

package main

// This file isolates the wiring of services/worker, which a colleague is
// still landing, so that the rest of orderd compiles and runs without it.
// The real wiring is workers.go (build tag worker_landed); when
// services/worker compiles, delete this file and that tag.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
)

// workersLanded reports whether services/worker is wired in this build.
const workersLanded = false

// wireWorkers builds the partition workers and the outbox relay and returns
// their Run. services/worker has not landed yet: serve runs without workers
// (orders stay pending) and the worker role refuses to start.
func wireWorkers(role Role, cfg *Config, db *postgres.DB, rs *redisstore.Store, nc *nats.Conn, js jetstream.JetStream, reg *prometheus.Registry, log *slog.Logger) (func(context.Context) error, error) {
	err := errors.New("services/worker is not in this build yet")
	if role == RoleServe {
		// serve: keep the ingress up, say loudly that nothing decides orders.
		log.Error("workers not started: orders will stay pending", "err", err)
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}
	return nil, fmt.Errorf("worker: %w", err)
}
