package ingress

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/flashsale/orderd/pkg/order"
)

// maxLimitedUsers bounds the per-user limiter map: a flood of distinct
// users costs at most this many entries (about 100 bytes each).
const maxLimitedUsers = 100_000

// The decision backlog guard (see backlog below). Variables for the tests.
var (
	// decideTarget: an order this process accepted that is still pending
	// after it is overdue: the partitions are behind.
	decideTarget = 2 * time.Second
	// overdueToShed: with this many overdue orders, new checkouts are shed.
	overdueToShed int64 = 16
	// decideGiveUp: how long an accepted order is watched at most (a
	// decision the hub never heard of must not shed for ever).
	decideGiveUp = 30 * time.Second
	// maxWatched bounds the orders watched at once (a goroutine each);
	// beyond it, new checkouts are shed too.
	maxWatched int64 = 100_000
)

// limits guards a write route: a global cap on requests in flight (503
// beyond it), a cap on the decision backlog (503 while the orders this
// process accepted wait too long for their decision), then, once the caller
// is known, a token bucket and a cap on requests in flight per user (429
// beyond them). Every refusal is answered before the handler runs, so a
// refused request reads no store, holds no stock and publishes nothing.
type limits struct {
	maxInflight  int64 // of all users; 0: no cap
	inflight     atomic.Int64
	userRate     rate.Limit // per user; 0: no rate limit
	userBurst    int
	userInflight int // per user; 0: no cap
	maxUsers     int

	mu    sync.Mutex
	users map[string]*userLimit

	// keyMu guards keys, the checkouts in flight per (user,
	// Idempotency-Key), whose retries share one slot (admitCheckout).
	// Taken before mu, never after.
	keyMu sync.Mutex
	keys  map[userKey]*keyedCheckout

	backlog backlog

	refused *prometheus.CounterVec
}

// backlog watches the orders this process accepted until they are decided.
// The in-flight cap bounds the checkouts being accepted, not the commands
// waiting in the partitions: accepting (a JetStream write) is cheaper than
// deciding, and under overload the partitions' CPU goes to the flood of
// requests, so without this guard the command stream grows without bound
// and decisions come minutes late (measured: 111 s at the median at twice
// the capacity). Like CoDel it sheds on the queueing delay itself: while
// overdueToShed orders have waited longer than decideTarget, new checkouts
// are answered 503 at once. Each ingress process sees the delay of the
// partitions it feeds, so processes need not coordinate.
type backlog struct {
	target, giveUp     time.Duration // decideTarget, decideGiveUp
	toShed, maxWatched int64         // overdueToShed, maxWatched

	watched atomic.Int64 // orders watched
	overdue atomic.Int64 // of them, pending for longer than target
}

// full reports whether new checkouts must wait for the backlog to drain.
func (b *backlog) full() bool {
	return b.overdue.Load() >= b.toShed || b.watched.Load() >= b.maxWatched
}

// watch follows order id, just accepted, until it is decided, it has been
// watched b.giveUp, or the waiter shuts down.
func (b *backlog) watch(w Waiter, id uuid.UUID) {
	changes, stop := w.Wait(id) // before Recent: no decision falls in between
	b.watched.Add(1)
	go func() {
		defer b.watched.Add(-1)
		defer stop()
		if o := w.Recent(id); o != nil && o.Status != order.StatusPending {
			return
		}
		late := time.NewTimer(b.target)
		defer late.Stop()
		giveUp := time.NewTimer(b.giveUp)
		defer giveUp.Stop()
		overdue := false
		defer func() {
			if overdue {
				b.overdue.Add(-1)
			}
		}()
		for {
			select {
			case o, ok := <-changes:
				if !ok || o.Status != order.StatusPending {
					return
				}
			case <-late.C:
				overdue = true
				b.overdue.Add(1)
			case <-giveUp.C:
				return
			}
		}
	}()
}

// acceptRecorder passes a checkout's response through and keeps the body of
// a 202 (a small JSON object), for the order id.
type acceptRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (a *acceptRecorder) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *acceptRecorder) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.status == http.StatusAccepted && a.body.Len()+len(p) <= 4<<10 {
		a.body.Write(p)
	}
	return a.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (a *acceptRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// acceptedID returns the order id of a first acceptance (not an idempotent
// replay), or false.
func (a *acceptRecorder) acceptedID() (uuid.UUID, bool) {
	if a.status != http.StatusAccepted || a.Header().Get("Idempotent-Replayed") != "" {
		return uuid.Nil, false
	}
	var acc struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	if err := json.Unmarshal(a.body.Bytes(), &acc); err != nil || acc.OrderID == uuid.Nil {
		return uuid.Nil, false
	}
	return acc.OrderID, true
}

// userLimit is one user's token bucket and requests in flight. Guarded by
// limits.mu, except the limiter, which locks itself.
type userLimit struct {
	bucket   *rate.Limiter
	inflight int
	lastSeen time.Time
}

func newLimits(cfg Config, reg *prometheus.Registry) *limits {
	l := &limits{
		maxInflight:  int64(max(cfg.MaxInflightCheckouts, 0)),
		userRate:     rate.Limit(max(cfg.CheckoutRate, 0)),
		userBurst:    cfg.CheckoutBurst,
		userInflight: max(cfg.CheckoutInflight, 0),
		maxUsers:     maxLimitedUsers,
		users:        make(map[string]*userLimit),
		keys:         make(map[userKey]*keyedCheckout),
		backlog:      backlog{target: decideTarget, giveUp: decideGiveUp, toShed: overdueToShed, maxWatched: maxWatched},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_checkout_refused_total",
			Help: "Checkouts refused before they ran, by reason: rate (429), user_inflight (429), overload (503), backlog (503), key_retries (409).",
		}, []string{"reason"}),
	}
	if l.userRate > 0 && l.userBurst <= 0 {
		l.userBurst = max(1, int(math.Ceil(float64(l.userRate))))
	}
	reg.MustRegister(l.refused)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orderd_checkout_backlog_overdue",
		Help: "Orders this process accepted that have waited longer than the decision target (2 s) and are still pending; from 16 on, checkouts are shed.",
	}, func() float64 { return float64(l.backlog.overdue.Load()) }))
	return l
}

// checkoutLimits wraps a user route with the checkout's limits: the global
// in-flight cap first (before the token is even verified: shedding must be
// cheap), then authentication, then the caller's own limits.
// Each call keeps its own counts: wrap a route once.
func (s *Server) checkoutLimits(h handlerFunc) handlerFunc {
	l := newLimits(s.cfg, s.Registry)
	perUser := s.user(func(w http.ResponseWriter, r *http.Request) error {
		release, err := l.admitCheckout(principal(r.Context()).UserID, r.Header.Get("Idempotency-Key"), time.Now())
		if err != nil {
			return err
		}
		defer release()
		if s.Waiter == nil {
			return h(w, r)
		}
		rec := &acceptRecorder{ResponseWriter: w}
		err = h(rec, r)
		if id, ok := rec.acceptedID(); ok {
			l.backlog.watch(s.Waiter, id)
		}
		return err
	})
	return func(w http.ResponseWriter, r *http.Request) error {
		if l.maxInflight > 0 {
			if l.inflight.Add(1) > l.maxInflight {
				l.inflight.Add(-1)
				l.refused.WithLabelValues("overload").Inc()
				s.shed(w, r)
				return nil
			}
			defer l.inflight.Add(-1)
		}
		if l.backlog.full() {
			l.refused.WithLabelValues("backlog").Inc()
			// The backlog takes seconds to drain: spread the retries over
			// 2 to 5 s rather than have them all come back in one.
			s.shedRetry(w, r, 2+rand.IntN(4))
			return nil
		}
		return perUser(w, r)
	}
}

// shed answers 503 with Retry-After, like writeError but without its log
// line: under overload, logging every shed request would only add load. It
// keeps the connection: closing it (tried) makes every retry a new TCP
// connection, and under a flood the listen queue overflows and connects
// time out (shed answers took seconds at the client). Idle keep-alive
// connections cost memory instead (some 17 KB each: a gigabyte for 60,000
// shed clients waiting to retry); bound them at the listener or the load
// balancer, and keep file descriptors for the embedded NATS server.
func (s *Server) shed(w http.ResponseWriter, r *http.Request) { s.shedRetry(w, r, 1) }

// shedRetry is shed with a Retry-After of seconds.
func (s *Server) shedRetry(w http.ResponseWriter, r *http.Request, seconds int) {
	st := statusOf[order.EUNAVAILABLE]
	p := problem{
		Type:     problemType(order.EUNAVAILABLE),
		Title:    st.title,
		Status:   st.status,
		Detail:   "the service is at capacity, try again shortly",
		Instance: r.URL.Path,
	}
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p) // the client may be gone: nothing to do
}

// admitUser takes one of user's in-flight slots and one token of their
// bucket, or returns an ERATELIMIT error with a Retry-After. The caller
// calls release when the request is done.
func (l *limits) admitUser(user string, now time.Time) (release func(), err error) {
	if l.userRate <= 0 && l.userInflight <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.users[user]
	if u == nil {
		if len(l.users) >= l.maxUsers && !l.evict(now) {
			l.refused.WithLabelValues("overload").Inc()
			return nil, withRetryAfter(order.Errorf(order.EUNAVAILABLE, "the service is at capacity, try again shortly"), 1)
		}
		u = &userLimit{}
		if l.userRate > 0 {
			u.bucket = rate.NewLimiter(l.userRate, l.userBurst)
		}
		l.users[user] = u
	}
	u.lastSeen = now
	if l.userInflight > 0 && u.inflight >= l.userInflight {
		l.refused.WithLabelValues("user_inflight").Inc()
		return nil, withRetryAfter(order.Errorf(order.ERATELIMIT,
			"you have %d checkouts in progress; wait for one to finish", u.inflight), 1)
	}
	if u.bucket != nil {
		res := u.bucket.ReserveN(now, 1)
		if d := res.DelayFrom(now); !res.OK() || d > 0 {
			res.CancelAt(now)
			l.refused.WithLabelValues("rate").Inc()
			return nil, withRetryAfter(order.Errorf(order.ERATELIMIT,
				"at most %g checkouts per second (burst %d) per user", float64(l.userRate), l.userBurst), retrySeconds(d))
		}
	}
	u.inflight++
	return func() {
		l.mu.Lock()
		u.inflight--
		l.mu.Unlock()
	}, nil
}

// maxKeyRetries bounds the requests in flight with one Idempotency-Key
// (the first and its concurrent retries): each retry waits for the first
// on the key's Redis lock, so beyond this many a retry is answered 409 at
// once rather than poll.
const maxKeyRetries = 4

// userKey names one user's Idempotency-Key.
type userKey struct{ user, key string }

// keyedCheckout is a checkout in flight with an Idempotency-Key: how many
// requests carry the key, and the release of the slot the first took.
type keyedCheckout struct {
	n       int
	release func()
}

// admitCheckout admits a checkout like admitUser, except that concurrent
// retries with one Idempotency-Key count as one checkout (SPEC 3 Limits):
// a request whose key (the raw header; "" for none) is already in flight
// for the user shares that checkout's slot and takes no token, so it is
// never answered 429; the handler answers it with the first request's
// answer or 409. Past maxKeyRetries of them, it is 409 at once. The slot
// is given back when the last request with the key is done.
func (l *limits) admitCheckout(user, key string, now time.Time) (release func(), err error) {
	if key == "" || (l.userRate <= 0 && l.userInflight <= 0) {
		return l.admitUser(user, now)
	}
	k := userKey{user, key}
	l.keyMu.Lock()
	defer l.keyMu.Unlock()
	leave := func() { l.leaveKey(k) }
	if c := l.keys[k]; c != nil {
		if c.n >= maxKeyRetries {
			l.refused.WithLabelValues("key_retries").Inc()
			return nil, withRetryAfter(order.Errorf(order.ECONFLICT, "a request with this Idempotency-Key is in progress; retry it shortly"), 1)
		}
		c.n++
		return leave, nil
	}
	slot, err := l.admitUser(user, now)
	if err != nil {
		return nil, err
	}
	l.keys[k] = &keyedCheckout{n: 1, release: slot}
	return leave, nil
}

// leaveKey ends one request with the key k, and gives back the checkout's
// slot after the last.
func (l *limits) leaveKey(k userKey) {
	l.keyMu.Lock()
	defer l.keyMu.Unlock()
	c := l.keys[k]
	if c.n--; c.n > 0 {
		return
	}
	delete(l.keys, k)
	c.release()
}

// retrySeconds rounds a wait up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// evict makes room in a full user map, and reports whether it did. It
// first drops the idle users whose bucket has refilled (forgetting them
// loses nothing: a new entry starts full), then, if that is not a quarter
// of the map, any users with nothing in flight (they get a fresh bucket
// next time: under a flood of distinct users, memory stays bounded at the
// cost of some leniency). Freeing a quarter at a time keeps the sweep's
// cost amortized. Users with checkouts in flight are never dropped: their
// number is bounded by the in-flight caps. Called with l.mu held.
func (l *limits) evict(now time.Time) bool {
	refill := time.Duration(0)
	if l.userRate > 0 {
		refill = time.Duration(float64(l.userBurst) / float64(l.userRate) * float64(time.Second))
	}
	target := l.maxUsers - max(l.maxUsers/4, 1)
	for k, u := range l.users {
		if u.inflight == 0 && now.Sub(u.lastSeen) >= refill {
			delete(l.users, k)
		}
	}
	for k, u := range l.users {
		if len(l.users) <= target {
			break
		}
		if u.inflight == 0 {
			delete(l.users, k)
		}
	}
	return len(l.users) < l.maxUsers
}

// trackedUsers returns the number of users in the limiter map (for tests).
func (l *limits) trackedUsers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.users)
}
