package ingress

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge

	accepted      prometheus.Counter   // 202 answers of POST /v1/orders
	drift         *prometheus.GaugeVec // the last reconciliation's drift per SKU
	reconcileRuns prometheus.Counter   // reconciliations run
	driftRuns     prometheus.Counter   // reconciliations that found drift
	replays       prometheus.Counter   // dead letters replayed
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderd_http_request_duration_seconds",
			Help:    "HTTP request latency, by route pattern and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "status"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "orderd_orders_accepted_total",
		Help: "Checkouts answered 202 Accepted by the ingress (their command is on JetStream; a replayed Idempotency-Key counts again).",
	})
	m.drift = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "orderd_reconcile_drift",
		Help: "The last reconciliation's drift per SKU: units the stock counter took that no order or reservation holds (if none, the events' disagreement with the orders).",
	}, []string{"sku"})
	m.reconcileRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "orderd_reconcile_runs_total",
		Help: "Reconciliations run (GET /v1/admin/reconcile).",
	})
	m.driftRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "orderd_reconcile_runs_with_drift_total",
		Help: "Reconciliations that found a SKU whose counter, orders and events disagree.",
	})
	m.replays = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "orderd_dead_letters_replayed_total",
		Help: "Dead letters replayed by an operator.",
	})
	reg.MustRegister(m.requests, m.latency, m.inflight, m.accepted, m.drift, m.reconcileRuns, m.driftRuns, m.replays)
	// The process and Go collectors are registered by whoever owns the
	// registry; register them here only if nobody did.
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets SSE handlers flush through the recorder.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// methodLabel maps a request's method to the metrics' method label: the
// methods the API serves as they are, anything else "other". The method is
// the client's to choose (the catch-all route takes any, without a token),
// so using it raw would let anyone add series without bound.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// instrument counts and times h's requests under route, which must be a
// fixed name (a route's pattern, or "unmatched"), never anything taken
// from the request.
func (s *Server) instrument(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.metrics.inflight.Inc()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			s.metrics.inflight.Dec()
			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			code := strconv.Itoa(rec.status)
			if route == "POST /v1/orders" && rec.status == http.StatusAccepted {
				s.metrics.accepted.Inc()
			}
			s.metrics.requests.WithLabelValues(route, methodLabel(r.Method), code).Inc()
			s.metrics.latency.WithLabelValues(route, code).Observe(time.Since(start).Seconds())
		}()
		h(rec, r)
	})
}
