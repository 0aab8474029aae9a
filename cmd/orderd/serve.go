package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/services/ingress"
)

// HTTP server limits against slow or hostile clients.
const (
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds reading a whole request, body included (bodies are
	// at most 64 KiB).
	readTimeout = 15 * time.Second
	// There is no write timeout: GET /v1/orders/{id}?wait= long-polls for up
	// to 30 s and /v1/orders/{id}/events is a Server-Sent Events stream that
	// lasts until the order is final. A server-wide WriteTimeout would cut
	// both; the ingress sets a deadline on each write instead (every answer
	// within a minute, every event of a stream within 10 s: a client that
	// stops reading is cut), streams end when their token expires, and
	// shutdown ends them (see stopHTTP).
	writeTimeout   = 0
	idleTimeout    = 120 * time.Second
	maxHeaderBytes = 64 << 10
)

// runServe runs the serve, api and worker roles: it connects to PostgreSQL,
// Redis and NATS (or starts the embedded NATS server), applies the
// migrations, then runs the HTTP ingress and/or the workers until ctx is
// cancelled or one of them fails, and shuts down in the reverse order of
// start.
func runServe(ctx context.Context, cfg *Config, role Role, log *slog.Logger) (err error) {
	withHTTP := slices.Contains(httpRoles, role)
	withWorkers := slices.Contains(workerRoles, role)
	log = log.With("role", string(role))
	slog.SetDefault(log)
	log.Info("orderd starting", "version", version(), "config", cfg.logValue(role))

	// Everything started is closed in reverse order, whatever happens.
	var closers closeStack
	defer func() {
		if cerr := closers.closeAll(log); err == nil {
			err = cerr
		}
	}()

	// The bearer tokens' verifier comes first: a wrong identity provider
	// (an unreachable JWK Set, a discovery document naming another issuer)
	// fails the start before anything else is opened.
	var verifier *auth.Verifier
	if withHTTP {
		if verifier, err = auth.New(ctx, cfg.authConfig(log)); err != nil {
			return err
		}
		closers.push("token verifier", func() error { verifier.Close(); return nil })
	}

	db, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	closers.push("postgres", db.Close)
	log.Info("postgres connected", "max_conns", cfg.DBMaxConns)
	if cfg.NoMigrate {
		log.Info("migrations skipped (NO_MIGRATE)")
	} else if err := postgres.Migrate(ctx, db.DB.DB, "up", io.Discard); err != nil {
		return err
	}

	rs, err := redisstore.Open(ctx, cfg.RedisURL, cfg.RedisPrefix, cfg.redisOptions()...)
	if err != nil {
		return err
	}
	closers.push("redis", rs.Close)
	log.Info("redis connected", "prefix", cfg.RedisPrefix)

	natsURL := cfg.NATSURL
	if natsURL == "" {
		ns, err := startEmbeddedNATS(cfg, log)
		if err != nil {
			return err
		}
		closers.push("embedded nats server", func() error {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil
		})
		natsURL = ns.ClientURL()
	}
	connName := "orderd-" + string(role)
	if cfg.WorkerName != "" {
		connName += "-" + cfg.WorkerName
	} else if h, err := os.Hostname(); err == nil {
		connName += "-" + h
	}
	natsOpts, err := cfg.natsOptions()
	if err != nil {
		return err
	}
	nc, err := natsbus.Connect(natsURL, connName, log, natsOpts...)
	if err != nil {
		return err
	}
	closers.push("nats connection", func() error { return drainNATS(nc, cfg.ShutdownTimeout) })
	log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = natsbus.EnsureStreams(sctx, js, natsbus.StreamConfig{Replicas: cfg.StreamReplicas})
	cancel()
	if err != nil {
		return err
	}
	log.Info("jetstream streams ready", "replicas", cfg.StreamReplicas)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Build everything before anything runs.
	var handler http.Handler
	closeHub := func() {}
	if withHTTP {
		hub, err := natsbus.NewHub(nc, log)
		if err != nil {
			return err
		}
		// Closed by stopHTTP to end the streams; closing twice is harmless.
		closers.push("order status hub", func() error { hub.Close(); return nil })
		closeHub = hub.Close
		// The operator page's numbers, and the SKU notes that keep every
		// ingress process's SKU cache in step with the admin's changes.
		ops, err := natsbus.StartOpsFeed(nc, js, natsbus.OpsFeedConfig{Partitions: cfg.Partitions, Log: log})
		if err != nil {
			return err
		}
		closers.push("ops feed", func() error { ops.Close(); return nil })
		skuNotes := natsbus.NewSKUNotes(nc, log)
		deps := ingress.Deps{
			Log:       log,
			Auth:      verifier,
			SKUs:      db,
			Addresses: db,
			Carts:     rs,
			Orders:    db,
			Status:    rs,
			Numbers:   db,
			Waiter:    hub,
			Payments:  db,
			SKUAdmin:  db,
			Notify:    func(orders []*order.Order) error { return natsbus.NotifyStatus(nc, orders) },
			Ready:     readyChecks(db, rs, js),
			Registry:  reg,
			// The operators' routes.
			DeadLetters: db,
			Replayer:    natsbus.NewPublisher(js),
			Reconciler:  newReconciler(db),
			SKUNotes:    skuNotes,
			Ops:         ops,
		}
		if cfg.PublishBatch {
			bp := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: cfg.Partitions, Timeout: cfg.PublishTimeout, Registerer: reg})
			closers.push("batch publisher", func() error { bp.Close(); return nil })
			deps.Publisher = bp
		} else {
			deps.Publisher = natsbus.NewPublisher(js)
		}
		api := ingress.New(ingress.Config{
			ShippingFee:    cfg.ShippingFee,
			Partitions:     cfg.Partitions,
			PublishTimeout: cfg.PublishTimeout,
			WebhookSecret:  cfg.PaymentWebhookSecret,

			CheckoutRate:         cfg.CheckoutRate,
			CheckoutBurst:        cfg.CheckoutBurst,
			CheckoutInflight:     cfg.CheckoutInflight,
			MaxInflightCheckouts: cfg.MaxInflightCheckouts,

			WriteRate:  cfg.WriteRate,
			WriteBurst: cfg.WriteBurst,

			StreamsPerUser: cfg.StreamsPerUser,
			StreamsTotal:   cfg.StreamsTotal,
		}, deps)
		sub, err := skuNotes.Subscribe(api.SKUChanged)
		if err != nil {
			return err
		}
		closers.push("sku notes", sub.Unsubscribe)
		handler = api.Handler()
	}
	var runWorkers func(context.Context) error
	if withWorkers {
		runWorkers, err = wireWorkers(cfg, db, rs, nc, js, reg, log)
		if err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)

	// The HTTP ingress.
	var srv *http.Server
	// Requests' contexts derive from streamsCtx, which stopHTTP cancels to
	// end SSE streams and long-polls during a shutdown.
	streamsCtx, cancelStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStreams()
	stopStreams := func() { cancelStreams(); closeHub() }
	if withHTTP {
		ln, err := listenHTTP(cfg.HTTPAddr, cfg.HTTPMaxConns)
		if err != nil {
			return err
		}
		srv = &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			BaseContext:       func(net.Listener) context.Context { return streamsCtx },
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		log.Info("http listening", "addr", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		})
	}

	// The partition workers and the outbox relay. Their context is not
	// gctx: they stop only after the HTTP server has drained.
	workerCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	workersDone := make(chan error, 1)
	if withWorkers {
		go func() { workersDone <- runWorkers(workerCtx) }()
		g.Go(func() error {
			select {
			case err := <-workersDone:
				workersDone <- err // for the shutdown step
				if workerCtx.Err() != nil {
					return nil // told to stop
				}
				// Returned before being told to stop: a failure.
				if err == nil {
					err = errors.New("stopped by themselves")
				}
				return fmt.Errorf("workers: %w", err)
			case <-gctx.Done():
				return nil
			}
		})
		log.Info("workers started", "name", cfg.WorkerName, "partitions", cfg.Partitions)
	}

	// A worker process serves no API, only its metrics and health.
	var opsSrv *http.Server
	if role == RoleWorker && cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		opsSrv = &http.Server{
			Handler:           opsHandler(reg, readyChecks(db, rs, js), log),
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		log.Info("metrics listening", "addr", ln.Addr().String())
		g.Go(func() error {
			if err := opsSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
	}

	log.Info("orderd ready")

	// The shutdown sequence: on a signal, or when any component fails.
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			log.Info("shutdown: signal received, stopping")
		} else {
			log.Warn("shutdown: a component failed, stopping")
		}
		if srv != nil {
			stopHTTP(srv, stopStreams, cfg, log)
		}
		var werr error
		if withWorkers {
			stopWorkers()
			start := time.Now()
			log.Info("shutdown: stopping workers (draining their batches)")
			select {
			case err := <-workersDone:
				if err != nil && !errors.Is(err, context.Canceled) {
					log.Error("shutdown: workers stopped with an error", "err", err, "took", time.Since(start))
					werr = fmt.Errorf("workers: %w", err)
				} else {
					log.Info("shutdown: workers stopped", "took", time.Since(start))
				}
			case <-time.After(cfg.ShutdownTimeout):
				log.Error("shutdown: workers did not stop in time; their unacked commands will be redelivered", "timeout", cfg.ShutdownTimeout)
			}
		}
		if opsSrv != nil {
			// Kept until the workers stopped, so that their drain is observable.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			opsSrv.Shutdown(ctx)
			cancel()
			log.Info("shutdown: metrics server stopped")
		}
		return werr
	})
	err = g.Wait()
	if err != nil {
		log.Error("orderd failed", "err", err)
	}
	return err
}

// readyChecks are the dependencies /readyz pings.
func readyChecks(db *postgres.DB, rs *redisstore.Store, js jetstream.JetStream) []ingress.Checker {
	return []ingress.Checker{
		{Name: "postgres", Ping: db.Ping},
		{Name: "redis", Ping: rs.Ping},
		{Name: "jetstream", Ping: func(ctx context.Context) error { _, err := js.AccountInfo(ctx); return err }},
	}
}

// listenHTTP listens on addr for the HTTP ingress, holding at most
// maxConns connections at once (0: no limit): past it the listener stops
// accepting, and new connections wait in the kernel's queue until one
// closes, so that a flood of connections (idle keep-alives, streams)
// costs a bounded amount of memory and file descriptors, and the
// embedded NATS server keeps its own.
func listenHTTP(addr string, maxConns int) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	if maxConns > 0 {
		ln = netutil.LimitListener(ln, maxConns)
	}
	return ln, nil
}

// opsHandler serves a worker process's /metrics, /healthz (the process
// runs) and /readyz (every dependency of checks answers; which one is
// down is answered, why is logged).
func opsHandler(reg *prometheus.Registry, checks []ingress.Checker, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	})
	mux.Handle("GET /readyz", ingress.ReadyHandler(log, checks))
	return mux
}

// stopHTTP stops accepting connections and waits up to SHUTDOWN_TIMEOUT for
// in-flight requests. SSE streams and long-polls never go idle by
// themselves: short requests (a checkout waits at most PUBLISH_TIMEOUT) get
// a grace period to finish, then stopStreams cancels the requests' base
// context and closes the status hub, so that streams end and their clients
// reconnect to another instance. What is still open at the deadline is
// closed.
func stopHTTP(srv *http.Server, stopStreams func(), cfg *Config, log *slog.Logger) {
	start := time.Now()
	log.Info("shutdown: http server draining", "timeout", cfg.ShutdownTimeout)
	grace := min(cfg.PublishTimeout+2*time.Second, cfg.ShutdownTimeout/2)
	t := time.AfterFunc(grace, func() {
		log.Info("shutdown: ending open streams and long-polls", "after", grace)
		stopStreams()
	})
	defer t.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown: http requests still open at the deadline, closing them", "err", err)
		srv.Close()
	}
	stopStreams()
	log.Info("shutdown: http server stopped", "took", time.Since(start))
}

// startEmbeddedNATS starts the NATS server serve uses when NATS_URL is empty.
func startEmbeddedNATS(cfg *Config, log *slog.Logger) (*server.Server, error) {
	always, err := cfg.syncAlways()
	if err != nil {
		return nil, err
	}
	ns, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{
		Addr:       cfg.NATSEmbeddedAddr,
		StoreDir:   cfg.NATSStoreDir,
		SyncAlways: always,
	})
	if err != nil {
		return nil, err
	}
	log.Info("embedded nats listening", "url", ns.ClientURL(), "store_dir", cfg.NATSStoreDir, "sync", cfg.NATSSync)
	if !always {
		log.Warn("NATS_SYNC is not always: JetStream acknowledges commands before they are on disk, so a power loss can lose accepted orders")
	}
	return ns, nil
}

// drainNATS drains the connection (unsubscribes, flushes what is pending)
// and waits until it is closed.
func drainNATS(nc *nats.Conn, timeout time.Duration) error {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain nats: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for !nc.IsClosed() {
		if time.Now().After(deadline) {
			nc.Close()
			return errors.New("drain nats: timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// closeStack closes what was started, last first.
type closeStack []struct {
	name  string
	close func() error
}

func (s *closeStack) push(name string, close func() error) {
	*s = append(*s, struct {
		name  string
		close func() error
	}{name, close})
}

// closeAll closes everything, logging each step, and returns the errors.
func (s *closeStack) closeAll(log *slog.Logger) error {
	var errs []error
	for i := len(*s) - 1; i >= 0; i-- {
		c := (*s)[i]
		start := time.Now()
		if err := c.close(); err != nil {
			log.Error("shutdown: close failed", "component", c.name, "err", err)
			errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
			continue
		}
		log.Info("shutdown: closed", "component", c.name, "took", time.Since(start))
	}
	*s = nil
	if len(errs) == 0 {
		log.Info("shutdown: complete")
	}
	return errors.Join(errs...)
}

// version is the VCS revision the binary was built from, if known.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return bi.Main.Version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
