package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flashsale/orderd/pkg/order"
)

// TestCheckoutAnswered503IsNeverPlaced: JetStream stalls while checkouts'
// messages are on their way (a paused link between the ingress and the
// server): the buyers are answered 503 when the publish timeout ends, and
// the messages reach the stream after that. A 503 says nothing was
// written (SPEC 3.2), so neither checkout may become an order: the buyer
// without a key does not find one, and the buyer with a key gets a new,
// single order from a retry.
func TestCheckoutAnswered503IsNeverPlaced(t *testing.T) {
	t.Parallel()
	st := newStack(t)
	direct := st.startIngress(t, "api-direct")
	link := startProxy(t, st.NATS.ClientURL())
	slow := st.startIngressVia(t, "api-slow", link.URL())
	st.startWorker(t, "worker-1")
	ctx := context.Background()

	sku := direct.createSKU(t, "kettle", 10)
	bs := direct.newBuyers(t, 2)
	noKey, withKey := bs[0], bs[1]
	// Every command message published from here on, as it reaches NATS.
	sent, err := st.connect(t, "e2e-sent").SubscribeSync("orders.cmd.*")
	if err != nil {
		t.Fatal(err)
	}

	link.pause()
	var wg sync.WaitGroup
	answers := make([]*response, 2)
	for i, key := range []string{"", "stalled-key"} {
		wg.Go(func() {
			_, resp, err := slow.checkout(ctx, bs[i], directBody(bs[i], sku.ID, 1), key)
			if resp == nil {
				t.Errorf("checkout of %s: %v", bs[i].ID, err)
			}
			answers[i] = resp
		})
	}
	wg.Wait()
	for i, resp := range answers {
		if resp != nil && resp.Status != http.StatusServiceUnavailable {
			t.Fatalf("checkout of %s while JetStream stalls = %s, want 503", bs[i].ID, resp)
		}
	}

	// The link comes back: what it held reaches the stream now, late.
	link.unpause()
	awaitCheckoutsSent(t, sent, noKey, withKey)
	st.awaitCommandsApplied(t, 30*time.Second)
	if n := st.ordersOf(t, noKey); n != 0 {
		t.Errorf("the buyer answered 503 without a key has %d orders, want none", n)
	}
	if n := st.ordersOf(t, withKey); n != 0 {
		t.Errorf("the buyer answered 503 with a key has %d orders before retrying, want none", n)
	}
	wantSKU(t, direct, sku.ID, 10, 0, 0)

	// The retry with the key places the order, once.
	acc, _, err := direct.checkout(ctx, withKey, directBody(withKey, sku.ID, 1), "stalled-key")
	if err != nil {
		t.Fatal(err)
	}
	awaitOne(t, direct, withKey, acc.OrderID)
	st.awaitCommandsApplied(t, 30*time.Second)
	if n := st.ordersOf(t, withKey); n != 1 {
		t.Errorf("after the retry the buyer has %d orders, want 1", n)
	}
	wantSKU(t, direct, sku.ID, 9, 1, 0)
}

// awaitCheckoutsSent reads the command messages of sub until it has seen a
// checkout of each buyer, and fails the test if that takes 30 s.
func awaitCheckoutsSent(t *testing.T, sub *nats.Subscription, bs ...buyer) {
	t.Helper()
	missing := map[string]bool{}
	for _, b := range bs {
		missing[b.ID] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(missing) > 0 {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("the checkouts of %v never reached NATS: %v", missing, err)
		}
		var p int
		if _, err := fmt.Sscanf(m.Subject, "orders.cmd.%d", &p); err != nil {
			continue // the ingress's own decisions
		}
		cmds, err := order.DecodeEnvelope(m.Data, p, partitions)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			if c.Checkout != nil {
				delete(missing, c.Checkout.UserID)
			}
		}
	}
}

// ordersOf returns how many orders PostgreSQL holds of b.
func (s *stack) ordersOf(t *testing.T, b buyer) int {
	t.Helper()
	var n int
	if err := s.DB.Get(&n, `SELECT count(*) FROM orders WHERE user_id = $1`, b.ID); err != nil {
		t.Fatal(err)
	}
	return n
}

// proxy is a TCP link to a server that a test can pause: while paused,
// what the clients send is held (not lost) and delivered on resume, as a
// stalled network or server would.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	paused  bool
	resumed chan struct{} // closed by unpause
	conns   []net.Conn
}

// startProxy listens on a free loopback port and forwards to the server
// at url (nats://host:port); it closes when the test ends.
func startProxy(t *testing.T, url string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: strings.TrimPrefix(url, "nats://")}
	t.Cleanup(p.close)
	go p.serve()
	return p
}

// URL returns the proxy's NATS URL.
func (p *proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused, p.resumed = true, make(chan struct{})
	}
}

// unpause delivers what was held, and what follows.
func (p *proxy) unpause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.forward(s, c)
		go io.Copy(c, s)
	}
}

// forward copies what the client sends to the server, holding it while
// the proxy is paused.
func (p *proxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				dst.Close()
			}
			return
		}
	}
}

// gate waits while the proxy is paused.
func (p *proxy) gate() {
	p.mu.Lock()
	paused, resumed := p.paused, p.resumed
	p.mu.Unlock()
	if paused {
		<-resumed
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.unpause()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
