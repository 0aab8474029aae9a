package ingress

import (
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/flashsale/orderd/pkg/order"
)

// The defaults of the per-user write limit (orderd's WRITE_RATE and
// WRITE_BURST): far above what a person does (a cart edit, an address, a
// preview now and then), and above what a benchmark's users do (1,000
// users previewing 10,600 times a second is 10.6 each), yet a token can
// no longer write as fast as a script can send.
const (
	DefaultWriteRate  = 20 // requests per second per user
	DefaultWriteBurst = 40
)

// writeLimiter is one token bucket per user, shared by every write route
// except the checkout (which has its own, limits.go) and by the preview: a
// user's requests to any of them draw from the same bucket, and past it
// they are answered 429 with Retry-After before the handler reads the body
// or a store. Like the checkout's limiter it holds at most maxLimitedUsers
// users, evicting idle ones when full.
type writeLimiter struct {
	rate     rate.Limit
	burst    int
	maxUsers int

	mu    sync.Mutex
	users map[string]*writeBucket

	refused prometheus.Counter
}

// writeBucket is one user's bucket; lastSeen is guarded by writeLimiter.mu.
type writeBucket struct {
	bucket   *rate.Limiter
	lastSeen time.Time
}

// newWriteLimiter returns the limiter of cfg's WriteRate and WriteBurst,
// or nil (no limit) when the rate is 0.
func newWriteLimiter(cfg Config, reg *prometheus.Registry) *writeLimiter {
	if cfg.WriteRate <= 0 || math.IsNaN(cfg.WriteRate) {
		return nil
	}
	l := &writeLimiter{
		rate:     rate.Limit(cfg.WriteRate),
		burst:    cfg.WriteBurst,
		maxUsers: maxLimitedUsers,
		users:    map[string]*writeBucket{},
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_write_refused_total",
			Help: "Write requests (every write route but the checkout, and the preview) refused 429 by the per-user rate limit.",
		}),
	}
	if l.burst <= 0 {
		l.burst = max(1, int(math.Ceil(2*cfg.WriteRate)))
	}
	reg.MustRegister(l.refused)
	return l
}

// admit takes one token of user's bucket, or returns an ERATELIMIT error
// with the seconds until there is one. A nil limiter admits everything.
func (l *writeLimiter) admit(user string, now time.Time) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	u := l.users[user]
	if u == nil {
		if len(l.users) >= l.maxUsers {
			l.evict(now)
		}
		u = &writeBucket{bucket: rate.NewLimiter(l.rate, l.burst)}
		l.users[user] = u
	}
	u.lastSeen = now
	l.mu.Unlock()
	res := u.bucket.ReserveN(now, 1)
	if d := res.DelayFrom(now); !res.OK() || d > 0 {
		res.CancelAt(now)
		l.refused.Inc()
		return withRetryAfter(order.Errorf(order.ERATELIMIT,
			"at most %g writes per second (burst %d) per user", float64(l.rate), l.burst), retrySeconds(d))
	}
	return nil
}

// evict makes room in a full user map: first the users whose bucket has
// refilled (forgetting them loses nothing: a new bucket starts full),
// then, if that freed less than a quarter, any (under a flood of distinct
// users memory stays bounded, at the cost of some leniency). Called with
// l.mu held.
func (l *writeLimiter) evict(now time.Time) {
	refill := time.Duration(float64(l.burst) / float64(l.rate) * float64(time.Second))
	for k, u := range l.users {
		if now.Sub(u.lastSeen) >= refill {
			delete(l.users, k)
		}
	}
	target := l.maxUsers - max(l.maxUsers/4, 1)
	for k := range l.users {
		if len(l.users) <= target {
			break
		}
		delete(l.users, k)
	}
}

// writer wraps a user's write route (or the preview): authentication, then
// the caller's write bucket, then h.
func (s *Server) writer(h handlerFunc) handlerFunc { return s.user(s.writeLimited(h)) }

// adminWriter is writer for an admin's write route.
func (s *Server) adminWriter(h handlerFunc) handlerFunc { return s.admin(s.writeLimited(h)) }

// writeLimited runs h if the authenticated caller's write bucket has a
// token.
func (s *Server) writeLimited(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.writes.admit(principal(r.Context()).UserID, time.Now()); err != nil {
			return err
		}
		return h(w, r)
	}
}
