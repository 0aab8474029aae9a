package worker

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// redisProxy stands between a worker and the shared Redis, so that a test
// can take Redis away from that worker alone (the server keeps running for
// every other test): down closes every connection and refuses new ones,
// up lets them through again.
type redisProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// newRedisProxy starts a proxy to the test Redis, closed with the test.
func newRedisProxy(t *testing.T) *redisProxy {
	t.Helper()
	opt, err := redis.ParseURL(redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &redisProxy{ln: ln, target: opt.Addr, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	return p
}

// url is the proxy's Redis URL, on the test Redis's database.
func (p *redisProxy) url(t *testing.T) string {
	opt, err := redis.ParseURL(redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	u := "redis://"
	if opt.Password != "" {
		u += opt.Username + ":" + opt.Password + "@"
	}
	return u + p.ln.Addr().String() + "/" + strconv.Itoa(opt.DB)
}

func (p *redisProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go pipe(c, up)
		go pipe(up, c)
	}
}

func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// setDown takes Redis away (true) or gives it back (false).
func (p *redisProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// redisThroughProxy gives the env a fresh Redis prefix, and returns a
// store on that prefix whose connections go through a proxy that the test
// can cut, and the proxy. e.rs keeps reading Redis directly.
func (e *env) redisThroughProxy() (*redisProxy, *redisstore.Store) {
	e.t.Helper()
	rs, prefix := redistest.New(e.t)
	e.rs = rs
	p := newRedisProxy(e.t)
	s, err := redisstore.Open(context.Background(), p.url(e.t), prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close() })
	return p, s
}

// withRedis makes w use s for everything it keeps in Redis.
func withRedis(w *Worker, s *redisstore.Store) *Worker {
	w.d.Redis = s
	w.pcfg.Marks = soldOutMarks(s)
	return w
}

// cachePending caches the orders of checkouts pending, as the ingress does
// before it publishes them.
func (e *env) cachePending(cmds ...order.Command) {
	e.t.Helper()
	for _, c := range cmds {
		k := c.Checkout
		o := &order.Order{ID: k.OrderID, Number: k.OrderNumber, UserID: k.UserID, AddressID: k.AddressID,
			PaymentMethod: k.PaymentMethod, Status: order.StatusPending, Lines: []order.Line{}, AcceptedAt: c.At, UpdatedAt: c.At}
		if _, err := e.rs.PutPending(context.Background(), o, nil, redisstore.NoQueue); err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitCached waits until the status cache holds each order of ids at its
// status in PostgreSQL.
func (e *env) waitCached(ids []uuid.UUID, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for {
			want, _ := e.status(id)
			got, err := e.rs.OrderStatus(context.Background(), id)
			if err == nil && got.Status == want {
				break
			}
			if time.Now().After(deadline) {
				var st order.Status
				if got != nil {
					st = got.Status
				}
				e.t.Fatalf("after %v the status cache says %q (%v) of order %s, which is %s in PostgreSQL", timeout, st, err, id, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
