package ingress

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/order"
)

// The defaults of the stream caps (orderd's STREAMS_PER_USER and
// STREAMS_TOTAL). A buyer follows one order at a time, in a tab or two;
// eight leaves room for a few tabs and an app. The total bounds what the
// streams of one process cost: each holds a connection, a goroutine, its
// buffers and a subscription, under 33 KB (TestStreamFloodCost measures
// both ends of the connection in one process), so 10,000 cost at most
// about 330 MB; a sale with more buyers waiting at once runs more ingress
// processes, each with its own cap (the clients retry after Retry-After,
// or poll without waiting).
const (
	DefaultStreamsPerUser = 8
	DefaultStreamsTotal   = 10_000
)

// Write deadlines. Variables so that tests can shorten them.
var (
	// streamWriteTimeout bounds every write of a stream (an event, a
	// heartbeat) and a long-poll's answer: a client that reads nothing for
	// this long is cut, and its goroutine and place are freed.
	streamWriteTimeout = 10 * time.Second
	// requestWriteTimeout bounds any other request, from its start to the
	// end of its answer: longer than the slowest handler (a reconciliation
	// may take 30 s), so that only a client that does not read is cut.
	requestWriteTimeout = time.Minute
)

// Retry-After of a refused stream, in seconds: streams last long, so a
// place frees slowly.
const (
	streamUserRetry  = 5
	streamTotalRetry = 3
)

// streamSlots counts the open event streams and long-polls, per user and
// in all, and refuses one past either cap. A zero cap is no cap.
type streamSlots struct {
	perUser, total int

	mu    sync.Mutex
	open  int
	users map[string]int

	refused *prometheus.CounterVec
}

func newStreamSlots(cfg Config, reg *prometheus.Registry) *streamSlots {
	l := &streamSlots{
		perUser: max(cfg.StreamsPerUser, 0),
		total:   max(cfg.StreamsTotal, 0),
		users:   map[string]int{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_streams_refused_total",
			Help: "Event streams and long-polls refused 429, by cap: user (STREAMS_PER_USER) or total (STREAMS_TOTAL).",
		}, []string{"cap"}),
	}
	reg.MustRegister(l.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orderd_streams_open",
		Help: "Event streams and long-polls open in this process (the operator's included).",
	}, func() float64 { return float64(l.count()) }))
	return l
}

// acquire takes a place for one of user's streams, or returns an
// ERATELIMIT error with a Retry-After. The caller calls release when the
// stream ends.
func (l *streamSlots) acquire(user string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.perUser > 0 && l.users[user] >= l.perUser:
		l.refused.WithLabelValues("user").Inc()
		return nil, withRetryAfter(order.Errorf(order.ERATELIMIT,
			"you have %d event streams and long-polls open, the most allowed: close one", l.users[user]), streamUserRetry)
	case l.total > 0 && l.open >= l.total:
		l.refused.WithLabelValues("total").Inc()
		return nil, withRetryAfter(order.Errorf(order.ERATELIMIT,
			"the service has as many event streams open as it serves: try again shortly, or poll without waiting"), streamTotalRetry)
	}
	l.open++
	l.users[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.open--
			if l.users[user]--; l.users[user] <= 0 {
				delete(l.users, user)
			}
		})
	}, nil
}

// count returns the streams open.
func (l *streamSlots) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// errTokenExpired ends a stream whose token expired (the context's cause).
var errTokenExpired = order.Errorf(order.EUNAUTHORIZED, "the bearer token has expired")

// stream is an open event stream or long-poll: its place, and a context
// that ends when the request does or when the caller's token expires (at
// exp; zero if unknown).
type stream struct {
	ctx     context.Context
	exp     time.Time
	release func()
	cancel  context.CancelFunc
}

// close frees the stream's place.
func (st *stream) close() {
	st.cancel()
	st.release()
}

// expired reports whether the stream ends because its token expired.
func (st *stream) expired() bool {
	return context.Cause(st.ctx) == errTokenExpired
}

// openStream admits one event stream or long-poll of the authenticated
// caller of r: a place under the caps, and a context that ends when the
// caller's token expires (a token already expired, within the verifier's
// leeway, is refused: the client must come back with a fresh one). The
// caller defers close.
func (s *Server) openStream(r *http.Request) (*stream, error) {
	release, err := s.streams.acquire(principal(r.Context()).UserID)
	if err != nil {
		return nil, err
	}
	exp, ok := tokenExpiry(r)
	if !ok {
		ctx, cancel := context.WithCancel(r.Context())
		return &stream{ctx: ctx, release: release, cancel: cancel}, nil
	}
	if !time.Now().Before(exp) {
		release()
		return nil, errTokenExpired
	}
	ctx, cancel := context.WithDeadlineCause(r.Context(), exp, errTokenExpired)
	return &stream{ctx: ctx, exp: exp, release: release, cancel: cancel}, nil
}

// tokenExpiry returns when the credential of r expires: the exp claim of
// its bearer token, which user verified (exp is required there); this only
// reads the claim. A request authenticated otherwise (none yet) has no
// known expiry, and its stream ends with the request.
func tokenExpiry(r *http.Request) (time.Time, bool) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return time.Time{}, false
	}
	return bearerExpiry(strings.TrimSpace(raw))
}

// bearerExpiry reads the exp claim of a token, without verifying it.
func bearerExpiry(token string) (time.Time, bool) {
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil || c.ExpiresAt == nil {
		return time.Time{}, false
	}
	return c.ExpiresAt.Time, true
}

// sseWriter writes a stream's frames, each within streamWriteTimeout, and
// keeps the deadline beyond the longest pause between two writes (idle),
// so that a quiet stream is not cut between them.
type sseWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func newSSEWriter(w http.ResponseWriter, idle time.Duration) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w), idle: idle}
}

// start writes the stream's headers and its retry field.
func (sw *sseWriter) start() error {
	h := sw.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	sw.w.WriteHeader(http.StatusOK)
	return sw.send(fmt.Appendf(nil, "retry: %d\n\n", sseRetry.Milliseconds()))
}

// send writes one frame and flushes it. A writer without deadlines (a
// test's recorder) streams without them.
func (sw *sseWriter) send(frame []byte) error {
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := sw.w.Write(frame); err != nil {
		return err
	}
	if err := sw.rc.Flush(); err != nil {
		return err
	}
	_ = sw.rc.SetWriteDeadline(time.Now().Add(sw.idle + streamWriteTimeout))
	return nil
}

// tokenExpired tells the client that the stream ends because its token
// expired: it resumes with a fresh one (and Last-Event-ID, which this
// event, having no id, does not move).
func (sw *sseWriter) tokenExpired() {
	_ = sw.send([]byte("event: token_expired\ndata: {\"reason\":\"the bearer token has expired: reconnect with a fresh one\"}\n\n"))
}
