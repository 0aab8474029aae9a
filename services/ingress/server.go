// Package ingress is the thin HTTP front of the order processor: it
// authenticates, validates the shape of requests, reads carts and catalog,
// assigns order ids, publishes commands to JetStream, and serves order status
// by poll and push. It never changes stock. Handlers return errors; one table
// (problem.go) turns them into RFC 9457 problem responses.
package ingress

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

// Config holds the ingress's settings.
type Config struct {
	ShippingFee    int64         // flat shipping fee in minor units
	Partitions     int           // number of stock partitions
	PublishTimeout time.Duration // how long a checkout waits for JetStream's ack before answering 503
	WebhookSecret  string        // PAYMENT_WEBHOOK_SECRET: signs the payment webhook (empty: the route answers 503)

	// Limits of POST /v1/orders (limits.go); 0 turns each off.
	CheckoutRate         float64 // checkouts per second per user (token bucket)
	CheckoutBurst        int     // the bucket's size (0: the rate, rounded up)
	CheckoutInflight     int     // checkouts in flight per user; beyond: 429
	MaxInflightCheckouts int     // checkouts in flight of all users; beyond: 503

	// The per-user limit of every other write route and of the preview
	// (writelimits.go): one token bucket per user for all of them; beyond
	// it, 429. 0 turns it off.
	WriteRate  float64 // requests per second per user
	WriteBurst int     // the bucket's size (0: twice the rate, rounded up)

	// Caps of the open event streams and long-polls (streams.go); beyond
	// them, 429. 0 turns each off.
	StreamsPerUser int // of one user
	StreamsTotal   int // of all users, in this process
}

// Checker is a dependency that readiness checks.
type Checker struct {
	Name string
	Ping func(ctx context.Context) error
}

// Deps are the ingress's collaborators. Each is an interface declared in
// this package (stores.go), satisfied by an adapter in pkg/.
type Deps struct {
	Log       *slog.Logger
	Auth      *auth.Verifier
	SKUs      SKUStore
	Addresses AddressStore
	Carts     CartStore
	Orders    OrderStore
	Status    StatusCache
	Publisher Publisher
	Numbers   NumberSource
	Waiter    Waiter
	Payments  PaymentStore  // the payment webhook (payments.go); nil: the route answers 503
	SKUAdmin  SKUAdminStore // pause, resume, PATCH and audit of SKUs (admin_skus.go)
	// Notify, if set, sends status notes of changed orders (natsbus.NotifyStatus).
	Notify   func(orders []*order.Order) error
	Ready    []Checker
	Registry *prometheus.Registry

	// The operators' routes (admin_deadletters.go, admin_reconcile.go);
	// nil: they answer 503.
	DeadLetters DeadLetterStore
	Replayer    Replayer
	Reconciler  Reconciler

	// SKUNotes, if set, tells every ingress process of an admin change of
	// a SKU (natsbus.SKUNotes); the wiring subscribes Server.SKUChanged.
	SKUNotes SKUNotifier
	// Ops feeds the operator page's live numbers (admin_stream.go); nil:
	// GET /v1/admin/stream answers 503.
	Ops OpsFeed
}

// Server is the HTTP ingress.
type Server struct {
	Deps
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
	routes  []string      // "METHOD /pattern" of every route, for the OpenAPI test
	skus    *skuCache     // SKUs for the checkout's pause check and price quote (skucache.go)
	queue   *queueLines   // pending orders' places in line (queue.go)
	writes  *writeLimiter // the per-user bucket of the write routes and the preview (writelimits.go)
	streams *streamSlots  // the open event streams and long-polls (streams.go)
}

// New returns a server with every route registered.
func New(cfg Config, d Deps) *Server {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 1
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	s := &Server{Deps: d, cfg: cfg, log: d.Log, mux: http.NewServeMux()}
	s.skus = newSKUCache(d.SKUs, skuCacheTTL, d.Log)
	s.queue = newQueueLines(d.Status, cfg.Partitions)
	s.metrics = newMetrics(d.Registry)
	s.writes = newWriteLimiter(cfg, d.Registry)
	s.streams = newStreamSlots(cfg, d.Registry)
	if d.Ops != nil {
		d.Ops.CountAccepted(s.acceptedTotal)
	}
	s.registerRoutes()
	return s
}

// Handler returns the server's root handler.
func (s *Server) Handler() http.Handler {
	return s.recoverPanics(s.mux)
}

// Routes returns "METHOD /pattern" for every registered route.
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle registers h for pattern ("METHOD /path"), instrumented and with its
// errors answered as problems. The answer must be written within
// requestWriteTimeout (the server has no write timeout of its own:
// streams and long-polls set their own deadlines, streams.go).
func (s *Server) handle(pattern string, h handlerFunc) {
	s.routes = append(s.routes, pattern)
	s.mux.Handle(pattern, s.instrument(pattern, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(requestWriteTimeout))
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}))
}

func (s *Server) registerRoutes() {
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	scrape := s.metrics.handler(s.Registry)
	s.mux.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(requestWriteTimeout))
		scrape.ServeHTTP(w, r)
	}))
	s.routes = append(s.routes, "GET /metrics")
	s.handle("GET /openapi.json", s.openAPI)
	s.catalogRoutes()
	s.orderRoutes()
	s.adminRoutes()
	s.adminPageRoutes()
	s.paymentRoutes()
	// Anything else is a 404 problem, not the mux's plain text.
	s.mux.Handle("/", s.instrument("unmatched", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, order.Errorf(order.ENOTFOUND, "no route %s %s", r.Method, truncate(r.URL.Path, 128)))
	}))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	serveReady(w, r, s.log, s.Ready)
	return nil
}

// ReadyHandler serves GET /readyz for checks (a worker process's ops
// server uses it; the ingress's own route does the same).
func ReadyHandler(log *slog.Logger, checks []Checker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveReady(w, r, log, checks) })
}

// serveReady pings every dependency within 2 s and answers 200 when all
// answer, else 503, with {ready, checks: {name: "ok" | "down"}}. The route
// is public, so it names the dependency that is down and never why: a
// driver's error names internal hosts, ports and users. The error goes to
// the log.
func serveReady(w http.ResponseWriter, r *http.Request, log *slog.Logger, deps []Checker) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := make(map[string]string, len(deps))
	ok := true
	for _, c := range deps {
		if err := c.Ping(ctx); err != nil {
			log.WarnContext(ctx, "readiness: dependency down", "dependency", c.Name, "err", err)
			checks[c.Name] = "down"
			ok = false
			continue
		}
		checks[c.Name] = "ok"
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]any{"ready": ok, "checks": checks})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				s.writeError(w, r, order.Errorf(order.EINTERNAL, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}
