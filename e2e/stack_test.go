package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
	"github.com/flashsale/orderd/services/ingress"
	"github.com/flashsale/orderd/services/worker"
)

// Settings of the in-process services, as the out-of-process test sets
// them through the environment.
const (
	partitions     = 4
	pinTTL         = 2 * time.Second
	ackWait        = 5 * time.Second
	publishTimeout = 10 * time.Second // generous: the race detector slows the whole machine
	dbConns        = 8                // per service: tests run in parallel on one PostgreSQL
	shippingFee    = 1000
)

// stack is one test's own PostgreSQL database (migrated), Redis prefix and
// NATS server with both streams. Ingress instances and workers are started
// on it with startIngress and startWorker, each with connections of its
// own, as separate processes would have.
type stack struct {
	DSN    string
	DB     *postgres.DB // the test's own pool, for checks
	Redis  *redisstore.Store
	Prefix string
	NATS   *server.Server
	JS     jetstream.JetStream // the test's own JetStream context, for checks
	log    *slog.Logger
}

func newStack(t *testing.T) *stack {
	t.Helper()
	dsn, db := pgtest.New(t)
	checkDecidedOnceAtEnd(t, db)
	rs, prefix := redistest.New(t)
	unlinkOnCleanup(t, rs, prefix)
	ns := natstest.Start(t)
	s := &stack{DSN: dsn, DB: db, Redis: rs, Prefix: prefix, NATS: ns, log: testLogger(t)}
	nc := s.connect(t, "e2e-checks")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsbus.EnsureStreams(ctx, js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	s.JS = js
	return s
}

// connect opens a NATS connection closed when the test ends.
func (s *stack) connect(t *testing.T, name string) *nats.Conn {
	t.Helper()
	return s.connectURL(t, name, s.NATS.ClientURL())
}

// connectURL is connect to the server at url (a proxy of the test's).
func (s *stack) connectURL(t *testing.T, name, url string) *nats.Conn {
	t.Helper()
	nc, err := natsbus.Connect(url, name, s.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// openDB opens a pool of the service's own on the test database.
func (s *stack) openDB(t *testing.T) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), s.DSN, dbConns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openRedis opens a store of the service's own on the test's prefix.
func (s *stack) openRedis(t *testing.T) *redisstore.Store {
	t.Helper()
	rs, err := redisstore.Open(context.Background(), redistest.URL(), s.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

// startIngress starts an ingress wired as cmd/orderd's serve.go wires it
// (stores, group-commit publisher, status hub, readiness checks) behind an
// httptest server, and returns a client of it. Everything stops when the
// test ends.
func (s *stack) startIngress(t *testing.T, name string) *api {
	t.Helper()
	return s.startIngressVia(t, name, s.NATS.ClientURL())
}

// startIngressVia is startIngress with the ingress's NATS connection to
// natsURL (a proxy of the test's server).
func (s *stack) startIngressVia(t *testing.T, name, natsURL string) *api {
	t.Helper()
	db, rs := s.openDB(t), s.openRedis(t)
	nc := s.connectURL(t, "orderd-api-"+name, natsURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	log := s.log.With("role", "api", "name", name)
	hub, err := natsbus.NewHub(nc, log)
	if err != nil {
		t.Fatal(err)
	}
	bp := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: partitions, Timeout: publishTimeout})
	t.Cleanup(bp.Close)
	srv := ingress.New(ingress.Config{
		ShippingFee:    shippingFee,
		Partitions:     partitions,
		PublishTimeout: publishTimeout,
	}, ingress.Deps{
		Log:       log,
		Auth:      auth.NewVerifier([]byte(testSecret)),
		SKUs:      db,
		Addresses: db,
		Carts:     rs,
		Orders:    db,
		Status:    rs,
		Numbers:   db,
		Waiter:    hub,
		Publisher: bp,
		Ready: []ingress.Checker{
			{Name: "postgres", Ping: db.Ping},
			{Name: "redis", Ping: rs.Ping},
			{Name: "jetstream", Ping: func(ctx context.Context) error { _, err := js.AccountInfo(ctx); return err }},
		},
		Registry: prometheus.NewRegistry(),
	})
	hs := httptest.NewServer(srv.Handler())
	// Cleanups run last first: the hub closes (ending long-polls), then the
	// HTTP server, then the publisher and the connections.
	t.Cleanup(hs.Close)
	t.Cleanup(hub.Close)
	return newAPI(t, hs.URL)
}

// startWorker runs worker.New + Run with the test's timings and returns a
// function that stops it (cancels Run and waits for its drain); it is
// also stopped when the test ends.
func (s *stack) startWorker(t *testing.T, name string) (stop func()) {
	t.Helper()
	db, rs := s.openDB(t), s.openRedis(t)
	nc := s.connect(t, "orderd-worker-"+name)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{
		Name:       name,
		Partitions: partitions,
		PinnedTTL:  pinTTL,
		AckWait:    ackWait,
	}, worker.Deps{
		Log:         s.log.With("role", "worker", "name", name),
		DB:          db,
		NC:          nc,
		JS:          js,
		Redis:       rs,
		Registry:    prometheus.NewRegistry(),
		DatabaseURL: s.DSN,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker %s: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("worker %s did not stop within 30s", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// unlinkOnCleanup deletes the prefix's keys in batches when the test ends,
// before redistest's cleanup deletes what is left one key at a time (which
// takes seconds after a sale of a thousand orders).
func unlinkOnCleanup(t *testing.T, rs *redisstore.Store, prefix string) {
	t.Cleanup(func() {
		ctx := context.Background()
		rdb := rs.Client()
		var cursor uint64
		for {
			keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 10000).Result()
			if err != nil {
				return
			}
			if len(keys) > 0 {
				rdb.Unlink(ctx, keys...)
			}
			if cursor = next; cursor == 0 {
				return
			}
		}
	})
}

// testLogger returns a logger of the services at Info into a buffer whose
// last lines are printed if the test fails.
func testLogger(t *testing.T) *slog.Logger {
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last service log lines:\n%s", tail(b.String(), 60))
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// logBuffer is a bytes.Buffer safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
