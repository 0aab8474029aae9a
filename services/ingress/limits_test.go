package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// withConfig changes an orderEnv's ingress configuration.
func withConfig(f func(*Config)) orderOption {
	return func(_ *orderEnv, cfg *Config, _ *Deps) { f(cfg) }
}

// stallCommands makes JetStream stop answering command publishes, as a
// stuck or partitioned server would: the command stream is deleted and a
// subscriber that never replies takes its subjects, so every publish waits
// for its timeout. resume brings the stream back.
func (e *orderEnv) stallCommands(t *testing.T) (resume func()) {
	t.Helper()
	ctx := context.Background()
	if err := e.JS.DeleteStream(ctx, natsbus.CommandStream); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.NATS.ClientURL(), nats.Name("silent"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe("orders.cmd.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
		if err := natsbus.EnsureStreams(ctx, e.JS, natsbus.StreamConfig{}); err != nil {
			t.Fatal(err)
		}
	}
}

// rawResult is the answer to a request sent from a goroutine other than
// the test's (where t.Fatal may not be called).
type rawResult struct {
	status     int
	retryAfter string
	body       string
	took       time.Duration
	err        error
}

// post sends a checkout without the test's helpers, for concurrent use.
func (e *orderEnv) post(token string, body any) rawResult { return e.postKey(token, "", body) }

// postKey is post with an Idempotency-Key (none if key is "").
func (e *orderEnv) postKey(token, key string, body any) rawResult {
	data, err := json.Marshal(body)
	if err != nil {
		return rawResult{err: err}
	}
	req, err := http.NewRequest("POST", e.URL+"/v1/orders", bytes.NewReader(data))
	if err != nil {
		return rawResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	start := time.Now()
	resp, err := e.Client.Do(req)
	if err != nil {
		return rawResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b), took: time.Since(start), err: err}
}

// waitInflight waits until the server has n requests in flight.
func (e *orderEnv) waitInflight(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(e.Server.metrics.inflight) < float64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%v requests in flight after 5s, want %d", testutil.ToFloat64(e.Server.metrics.inflight), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantRetryAfter fails the test unless resp has a Retry-After of whole
// seconds, at least 1.
func wantRetryAfter(t *testing.T, v string) {
	t.Helper()
	if n, err := strconv.Atoi(v); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want a number of seconds >= 1", v)
	}
}

func TestCheckoutRateLimit(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withConfig(func(c *Config) { c.CheckoutRate, c.CheckoutBurst = 0.001, 2 }))
	sku := e.createSKU(t, newSKU("Limited", 1500, 100))
	a, b := e.newBuyer(t), e.newBuyer(t)
	body := directBody(a, order.LineRequest{SKUID: sku.ID, Quantity: 1})

	// The burst passes.
	for range 2 {
		e.mustCheckout(t, a, body, "")
	}
	before, cmds := e.snapshot(t), e.commandCount(t)
	resp, data := e.checkout(t, a, body, "")
	p := wantProblem(t, resp, data, http.StatusTooManyRequests)
	if p.Type != problemType(order.ERATELIMIT) {
		t.Errorf("problem type %q", p.Type)
	}
	wantRetryAfter(t, resp.Header.Get("Retry-After"))
	// At 0.001/s, the next token is about 1000s away.
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 900 || ra > 1000 {
		t.Errorf("Retry-After %d, want the time to the next token (900 to 1000s)", ra)
	}
	// Refused before anything was read or written: no pending order, no
	// command, no order number taken.
	e.assertUnchanged(t, before)
	if got := e.commandCount(t); got != cmds {
		t.Errorf("%d commands after a refused checkout, want %d", got, cmds)
	}
	// A refused request costs no token, and another user has their own bucket.
	e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	// An invalid request that is refused is refused before its body is read.
	resp, data = e.checkout(t, a, `{"price": 1}`, "")
	wantProblem(t, resp, data, http.StatusTooManyRequests)
	// (TestLimitsRetryAfter checks the refill, on a clock of its own.)
}

func TestCheckoutUserInflightCap(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withConfig(func(c *Config) { c.CheckoutInflight = 2; c.PublishTimeout = 3 * time.Second }))
	sku := e.createSKU(t, newSKU("Limited", 1500, 100))
	a, b := e.newBuyer(t), e.newBuyer(t)
	body := directBody(a, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	// The stalled checkouts write their pending orders and take them out
	// again when their publish fails: in the end, nothing has changed.
	before := e.snapshot(t)
	resume := e.stallCommands(t)

	var wg sync.WaitGroup
	stalled := make([]rawResult, 2)
	for i := range stalled {
		wg.Go(func() { stalled[i] = e.post(a.Token, body) })
	}
	e.waitInflight(t, 2)

	got := e.post(a.Token, body)
	if got.err != nil || got.status != http.StatusTooManyRequests {
		t.Fatalf("third concurrent checkout: %d %v %s, want 429", got.status, got.err, got.body)
	}
	wantRetryAfter(t, got.retryAfter)
	if got.took > 2*time.Second {
		t.Errorf("the 429 took %s: it must not wait for the others (publish timeout 3s)", got.took)
	}
	// Another user is not held back by a's checkouts (theirs stalls too).
	other := e.post(b.Token, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}))
	if other.status != http.StatusServiceUnavailable {
		t.Errorf("b's checkout while JetStream stalls: %d %s, want 503 after the publish timeout", other.status, other.body)
	}
	wg.Wait()
	for i, r := range stalled {
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("stalled checkout %d: %d %s, want 503", i, r.status, r.body)
		}
	}
	e.assertUnchanged(t, before)
	// Their slots are free again.
	resume()
	e.mustCheckout(t, a, body, "")
}

// TestCheckoutInflightCapCountsAKeyOnce: concurrent retries with one
// Idempotency-Key are one checkout (SPEC 3 Limits). They share its
// in-flight slot, so none of them is answered 429: each gets the first
// request's answer or 409. Another key is still held to the cap.
func TestCheckoutInflightCapCountsAKeyOnce(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withConfig(func(c *Config) { c.CheckoutInflight = 1; c.PublishTimeout = 3 * time.Second }))
	sku := e.createSKU(t, newSKU("Limited", 1500, 100))
	a := e.newBuyer(t)
	body := directBody(a, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	resume := e.stallCommands(t)

	const retries = 4
	var (
		wg   sync.WaitGroup
		done atomic.Int64
	)
	got := make([]rawResult, retries)
	post := func(i int) {
		wg.Go(func() {
			got[i] = e.postKey(a.Token, "one-checkout", body)
			done.Add(1)
		})
	}
	post(0)
	e.waitInflight(t, 1)
	for i := 1; i < retries; i++ {
		post(i)
	}
	// Until all are in flight, or some came back early (refused).
	for testutil.ToFloat64(e.Server.metrics.inflight) < retries && done.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	other := e.postKey(a.Token, "another-checkout", body)
	if other.status != http.StatusTooManyRequests {
		t.Errorf("another key while the first is in flight: %d %s, want 429", other.status, other.body)
	}
	wg.Wait()
	for i, r := range got {
		switch r.status {
		case http.StatusServiceUnavailable, http.StatusConflict: // the first's answer (JetStream stalls), or in flight
		default:
			t.Errorf("retry %d with the same key: %d %v %s, want 503 (the first's answer) or 409", i, r.status, r.err, r.body)
		}
	}
	resume()
	e.mustCheckout(t, a, body, "one-checkout")
}

func TestCheckoutShedsOverload(t *testing.T) {
	t.Parallel()
	const capacity = 4
	e := newOrderEnv(t, withConfig(func(c *Config) { c.MaxInflightCheckouts = capacity; c.PublishTimeout = 5 * time.Second }))
	sku := e.createSKU(t, newSKU("Limited", 1500, 1000))
	buyers := make([]buyer, capacity+1)
	for i := range buyers {
		buyers[i] = e.newBuyer(t)
	}
	bodyOf := func(b buyer) map[string]any { return directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}) }
	before := e.snapshot(t)
	resume := e.stallCommands(t)

	// capacity checkouts hang on the stalled JetStream.
	var wg sync.WaitGroup
	stalled := make([]rawResult, capacity)
	for i := range stalled {
		wg.Go(func() { stalled[i] = e.post(buyers[i].Token, bodyOf(buyers[i])) })
	}
	e.waitInflight(t, capacity)

	// A flood beyond them is shed at once, with a Retry-After, even with an
	// invalid token: shedding comes before any work.
	const flood = 64
	shed := make([]rawResult, flood)
	var fw sync.WaitGroup
	for i := range shed {
		tok := buyers[capacity].Token
		if i%2 == 1 {
			tok = "not-a-token"
		}
		fw.Go(func() { shed[i] = e.post(tok, bodyOf(buyers[capacity])) })
	}
	fw.Wait()
	for i, r := range shed {
		if r.err != nil || r.status != http.StatusServiceUnavailable {
			t.Fatalf("flood request %d: %d %v %s, want 503", i, r.status, r.err, r.body)
		}
		wantRetryAfter(t, r.retryAfter)
		if r.took > 2500*time.Millisecond {
			t.Errorf("flood request %d took %s: shedding must not wait for the publish timeout (5s)", i, r.took)
		}
	}
	if got := refusedCount(t, e.Server.Registry, "overload"); got != flood {
		t.Errorf("orderd_checkout_refused_total{reason=overload} = %v, want %d", got, flood)
	}

	// The load drops (the stalled requests time out) and JetStream is back:
	// the service recovers.
	wg.Wait()
	for i, r := range stalled {
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("stalled checkout %d: %d %s, want 503", i, r.status, r.body)
		}
	}
	e.assertUnchanged(t, before)
	resume()
	for _, b := range buyers {
		e.mustCheckout(t, b, bodyOf(b), "")
	}
}

// refusedCount returns the value of orderd_checkout_refused_total{reason}.
func refusedCount(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "orderd_checkout_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestLimitsUserMapBounded floods the per-user limiter with distinct users:
// the map stays bounded, and a user with a checkout in flight keeps their
// count.
func TestLimitsUserMapBounded(t *testing.T) {
	t.Parallel()
	l := newLimits(Config{CheckoutRate: 5, CheckoutBurst: 10, CheckoutInflight: 1}, prometheus.NewRegistry())
	l.maxUsers = 1000
	now := time.Now()
	release, err := l.admitUser("busy", now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100_000 {
		rel, err := l.admitUser(fmt.Sprintf("u%d", i), now)
		if err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		rel()
		if n := l.trackedUsers(); n > l.maxUsers {
			t.Fatalf("%d users tracked after %d distinct users, want at most %d", n, i+1, l.maxUsers)
		}
	}
	if _, err := l.admitUser("busy", now); order.ErrorCode(err) != order.ERATELIMIT {
		t.Errorf("busy's second checkout in flight: %v, want ERATELIMIT (its entry must survive eviction)", err)
	}
	release()
	// Idle users whose bucket refilled go first.
	later := now.Add(3 * time.Second)
	rel, err := l.admitUser("late", later)
	if err != nil {
		t.Fatal(err)
	}
	rel()
	if n := l.trackedUsers(); n > l.maxUsers {
		t.Errorf("%d users tracked, want at most %d", n, l.maxUsers)
	}
}

func TestLimitsRetryAfter(t *testing.T) {
	t.Parallel()
	l := newLimits(Config{CheckoutRate: 0.2, CheckoutBurst: 1}, prometheus.NewRegistry())
	now := time.Now()
	rel, err := l.admitUser("u", now)
	if err != nil {
		t.Fatal(err)
	}
	rel()
	_, err = l.admitUser("u", now)
	var ra *retryAfter
	if order.ErrorCode(err) != order.ERATELIMIT || !errors.As(err, &ra) || ra.seconds != 5 {
		t.Fatalf("second checkout: %v (retry after %v), want ERATELIMIT with 5s", err, ra)
	}
	// The refusal took no token: 5s later the next one passes.
	if _, err := l.admitUser("u", now.Add(5*time.Second)); err != nil {
		t.Errorf("after 5s: %v", err)
	}
}

// TestLimitsKeyRetriesShareASlot: requests with one Idempotency-Key share
// the first one's slot without a token, up to maxKeyRetries (then 409),
// and the slot is free again only after the last of them.
func TestLimitsKeyRetriesShareASlot(t *testing.T) {
	t.Parallel()
	l := newLimits(Config{CheckoutRate: 0.001, CheckoutBurst: 1, CheckoutInflight: 1}, prometheus.NewRegistry())
	now := time.Now()
	var releases []func()
	for i := range maxKeyRetries {
		rel, err := l.admitCheckout("u", "k", now)
		if err != nil {
			t.Fatalf("request %d with the key: %v", i, err)
		}
		releases = append(releases, rel)
	}
	if _, err := l.admitCheckout("u", "k", now); order.ErrorCode(err) != order.ECONFLICT {
		t.Errorf("one request more than maxKeyRetries: %v, want ECONFLICT (409)", err)
	}
	if _, err := l.admitCheckout("u", "other", now); order.ErrorCode(err) != order.ERATELIMIT {
		t.Errorf("another key: %v, want ERATELIMIT (the slot is taken)", err)
	}
	for _, rel := range releases[1:] {
		rel()
	}
	last, err := l.admitCheckout("u", "k", now)
	if err != nil {
		t.Fatalf("a retry while the first is still in flight: %v", err)
	}
	releases[0]()
	if got := l.users["u"].inflight; got != 1 {
		t.Errorf("after the first is done, %d slots taken, want 1 (a retry is still in flight)", got)
	}
	last()
	if got, keys := l.users["u"].inflight, len(l.keys); got != 0 || keys != 0 {
		t.Errorf("after the last, %d slots taken and %d keys tracked, want none", got, keys)
	}
}

// TestBatchPublisherQueueBounded checks that the batch publisher cannot
// queue without bound while JetStream stalls: a publish waits at most for
// its context, whether its command is queued or not, and the queue is a
// bounded channel.
func TestBatchPublisherQueueBounded(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	e.stallCommands(t)
	bp := natsbus.NewBatchPublisher(e.JS, natsbus.BatchConfig{Partitions: 1, MaxBatch: 1, InFlight: 1, Timeout: time.Second})
	t.Cleanup(bp.Close)

	const n = 50 // far more than the queue holds (MaxBatch*InFlight*2)
	errs := make([]error, n)
	took := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			cmd := order.Command{ID: uuid.New(), Kind: order.KindCheckout, Partition: 0, At: time.Now()}
			errs[i] = bp.Publish(ctx, cmd)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i := range n {
		if order.ErrorCode(errs[i]) != order.EUNAVAILABLE {
			t.Errorf("publish %d: %v, want EUNAVAILABLE", i, errs[i])
		}
		if took[i] > 2*time.Second {
			t.Errorf("publish %d took %s with a 300ms context", i, took[i])
		}
	}
}
