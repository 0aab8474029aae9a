package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/services/worker"
)

// wireWorkers builds the partition workers, the saga sweeper and the outbox
// relay of this process, and returns their Run: it runs until its context
// ends, then drains and returns.
func wireWorkers(cfg *Config, db *postgres.DB, rs *redisstore.Store, nc *nats.Conn, js jetstream.JetStream, reg *prometheus.Registry, log *slog.Logger) (func(context.Context) error, error) {
	w, err := worker.New(worker.Config{
		Name:               cfg.WorkerName,
		Partitions:         cfg.Partitions,
		BatchSize:          cfg.BatchSize,
		PinnedTTL:          cfg.PinTTL,
		AckWait:            cfg.AckWait,
		MaxDeliver:         cfg.MaxDeliver,
		PaymentHold:        cfg.PaymentHold,
		ReservationTimeout: cfg.ReservationTimeout,
	}, worker.Deps{
		Log:         log,
		DB:          db,
		NC:          nc,
		JS:          js,
		Redis:       rs,
		Registry:    reg,
		DatabaseURL: cfg.DatabaseURL, // the relay LISTENs for outbox notifications
	})
	if err != nil {
		return nil, err
	}
	return w.Run, nil
}
