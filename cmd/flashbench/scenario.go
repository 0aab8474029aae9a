package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

// buyer is one user of the run with what it checks out.
type buyer struct {
	user    string
	token   string
	address uuid.UUID
	lines   []order.LineRequest // the direct items, or the cart of cart-mix and preview
}

// outcome is what happened to one request: a buyer's checkout and its
// decision, or one preview.
type outcome struct {
	Buyer      int
	Lines      []order.LineRequest
	Due        time.Time // when the request was due (open model) or sent (closed loop)
	AcceptedAt time.Time // when the 202 (or the preview's 200) arrived; zero if never
	DecidedAt  time.Time // when the client saw the order leave pending; zero if never
	OrderID    uuid.UUID
	Status     order.Status
	Reason     order.RejectReason
	Err        string // why the checkout was not accepted, or the last error while waiting
	HTTPStatus int    // the final answer's status; 0 for a transport error
	Response   string // how a failed request ended, for the summary's responses
	Swept      bool   // the decision was seen only by the final sweep, after the timeout
}

// decided reports whether the client saw the order's decision.
func (o *outcome) decided() bool { return !o.DecidedAt.IsZero() }

// confirmed reports whether the decision was to take the stock.
func (o *outcome) confirmed() bool { return o.decided() && o.Status != order.StatusRejected }

// runner runs one scenario against the service.
type runner struct {
	cfg    Config
	api    *client
	runID  string
	admin  string // the admin's token
	skus   []order.SKU
	buyers []buyer
	outs   []outcome // one per buyer (previews: one per request, appended)
	outsMu sync.Mutex

	start    time.Time // the start of the load phase: setup is not measured
	loadEnd  time.Time
	end      time.Time
	schedule ScheduleStats
	stock    []StockSample

	accepted, decided, failed, lastStock atomic.Int64 // live counters for the progress bar
	cpu                                  *cpuMeter    // the server's CPU during the sale; nil: not measured
}

// newRunID returns a short random id that makes the run's user ids unique.
func newRunID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func newRunner(cfg Config, api *client) *runner {
	r := &runner{cfg: cfg, api: api, runID: newRunID()}
	if sel, err := parseServerProcs(cfg.ServerProcs, cfg.ServerPIDs); err == nil && !measuresOnly(cfg.Scenario) {
		r.cpu = newCPUMeter(sel)
	}
	return r
}

// userPrefix starts the user id of every buyer of the run.
func (r *runner) userPrefix() string { return "fb-" + r.runID + "-" }

// checkoutBudget bounds how long one buyer keeps trying to check out
// (--timeout when longer).
const checkoutBudget = 2 * time.Minute

// tokenTTL outlives any run.
const tokenTTL = 24 * time.Hour

// setup creates the SKUs, the buyers' tokens and addresses, and the carts,
// through the API, C requests at a time. None of it is measured.
func (r *runner) setup(ctx context.Context) error {
	secret := []byte(r.cfg.JWTSecret)
	var err error
	if r.admin, err = auth.Mint(secret, r.userPrefix()+"admin", true, tokenTTL); err != nil {
		return err
	}
	nSKUs := 1
	switch r.cfg.Scenario {
	case ScenarioCartMix:
		nSKUs = r.cfg.SKUs
	case ScenarioPreview:
		nSKUs = 3
	}
	for i := range nSKUs {
		price, stock := int64(1999+100*i), r.cfg.Stock
		ns := order.NewSKU{Name: fmt.Sprintf("flashbench %s %s #%d", r.runID, r.cfg.Scenario, i+1), Price: &price, Currency: "EUR", Stock: &stock}
		if r.cfg.Hold > 0 {
			secs := int64(r.cfg.Hold / time.Second)
			ns.PaymentHoldSeconds = &secs
		}
		s, err := r.api.createSKU(ctx, r.admin, ns)
		if err != nil {
			return fmt.Errorf("create SKU: %w", err)
		}
		if s.ID == uuid.Nil {
			return errors.New("create SKU: the answer has no id")
		}
		r.skus = append(r.skus, s)
	}

	rng := mrand.New(mrand.NewPCG(uint64(r.cfg.Seed), 0x5eed))
	r.buyers = make([]buyer, r.cfg.Buyers)
	for i := range r.buyers {
		b := &r.buyers[i]
		b.user = fmt.Sprintf("%s%d", r.userPrefix(), i)
		if b.token, err = auth.Mint(secret, b.user, false, tokenTTL); err != nil {
			return err
		}
		b.lines = r.linesFor(rng)
	}

	var (
		mu       sync.Mutex
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// At most setupConcurrency at once: an open-model run's C can be far
	// larger than a server wants connections (shed.go).
	Plan{N: len(r.buyers), Limit: min(r.cfg.Concurrency, setupConcurrency)}.Run(ctx, time.Now(), func(ctx context.Context, i int, _ time.Time) {
		if err := r.setupBuyer(ctx, i); err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = fmt.Errorf("set up buyer %s: %w", r.buyers[i].user, err)
				cancel()
			}
			mu.Unlock()
		}
	})
	return firstErr
}

// linesFor returns what one buyer checks out.
func (r *runner) linesFor(rng *mrand.Rand) []order.LineRequest {
	switch r.cfg.Scenario {
	case ScenarioCartMix:
		n := 1 + rng.IntN(min(5, len(r.skus)))
		perm := rng.Perm(len(r.skus))[:n]
		lines := make([]order.LineRequest, n)
		for j, k := range perm {
			lines[j] = order.LineRequest{SKUID: r.skus[k].ID, Quantity: 1 + rng.Int64N(2)}
		}
		return lines
	case ScenarioPreview:
		lines := make([]order.LineRequest, len(r.skus))
		for j, s := range r.skus {
			lines[j] = order.LineRequest{SKUID: s.ID, Quantity: 1}
		}
		return lines
	}
	return []order.LineRequest{{SKUID: r.skus[0].ID, Quantity: 1}}
}

var cities = []struct{ city, postal, country string }{
	{"Berlin", "10115", "DE"}, {"Paris", "75001", "FR"}, {"Madrid", "28001", "ES"},
	{"Milano", "20121", "IT"}, {"Wien", "1010", "AT"}, {"Amsterdam", "1011", "NL"},
}

func (r *runner) setupBuyer(ctx context.Context, i int) error {
	b := &r.buyers[i]
	c := cities[i%len(cities)]
	id, err := r.api.createAddress(ctx, b.token, order.NewAddress{
		Recipient: fmt.Sprintf("Buyer %d", i), Line1: fmt.Sprintf("Teststraße %d", 1+i%200),
		City: c.city, PostalCode: c.postal, Country: c.country,
	})
	if err != nil {
		return err
	}
	b.address = id
	if r.cfg.Scenario == ScenarioCartMix || r.cfg.Scenario == ScenarioPreview {
		for _, l := range b.lines {
			if err := r.api.setCartItem(ctx, b.token, l.SKUID, l.Quantity); err != nil {
				return err
			}
		}
	}
	return nil
}

// load runs the scenario's measured phase and waits for the decisions.
func (r *runner) load(ctx context.Context) {
	plan := Plan{N: len(r.buyers), Rate: r.cfg.Rate, Limit: r.cfg.Concurrency, Duration: r.cfg.Duration, Slack: r.cfg.Slack}
	if r.cfg.Scenario == ScenarioPreview {
		plan.N = 0
		r.start = time.Now()
		r.schedule = plan.Run(ctx, r.start, r.previewOnce)
		r.loadEnd = time.Now()
		r.end = r.loadEnd
		return
	}
	if r.cfg.Scenario == ScenarioRawAccept {
		r.loadRaw(ctx)
		return
	}

	r.outs = make([]outcome, len(r.buyers))
	waitCtx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	var waiters sync.WaitGroup
	slots := make(chan struct{}, r.cfg.Waiters)

	r.cpu.begin() // the server's CPU from the first checkout sent (servercpu.go)
	r.start = time.Now()
	stopPoll := r.pollStock(ctx)
	r.schedule = plan.Run(ctx, r.start, func(ctx context.Context, i int, due time.Time) {
		if r.checkoutOnce(ctx, i, due) {
			waiters.Add(1)
			go func() {
				defer waiters.Done()
				select {
				case slots <- struct{}{}:
				case <-waitCtx.Done():
					return
				}
				defer func() { <-slots }()
				r.awaitDecision(waitCtx, i)
			}()
		}
	})
	r.loadEnd = time.Now()
	r.cpu.end() // to the last checkout answered
	timer := time.AfterFunc(r.cfg.Timeout, cancelWait)
	waiters.Wait()
	timer.Stop()
	r.sweep(ctx)
	r.end = time.Now()
	stopPoll()
}

// sweep reads, once and without waiting, every accepted order whose
// decision no waiter saw before the timeout: with every waiter held by a
// slow order, others can be decided unseen. Those found decided count as
// decided now (their decide latency is an upper bound); only those still
// pending are lost.
func (r *runner) sweep(ctx context.Context) {
	var undecided []int
	for i := range r.outs {
		if o := &r.outs[i]; !o.AcceptedAt.IsZero() && !o.decided() {
			undecided = append(undecided, i)
		}
	}
	if len(undecided) == 0 || ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, sweepBudget)
	defer cancel()
	Plan{N: len(undecided), Limit: r.cfg.Concurrency}.Run(ctx, time.Now(), func(ctx context.Context, k int, _ time.Time) {
		i := undecided[k]
		o := &r.outs[i]
		st, err := r.api.orderNow(ctx, r.buyers[i].token, o.OrderID)
		if err != nil || !st.decided() {
			return
		}
		o.DecidedAt, o.Status, o.Reason, o.Err = time.Now(), st.Status, st.RejectReason, ""
		o.Swept = true
		r.decided.Add(1)
	})
}

// sweepBudget bounds the final sweep.
const sweepBudget = 30 * time.Second

// checkoutOnce places buyer i's order and reports whether it was accepted.
func (r *runner) checkoutOnce(ctx context.Context, i int, due time.Time) bool {
	b := &r.buyers[i]
	o := &r.outs[i]
	o.Buyer, o.Lines, o.Due = i, b.lines, due
	body := checkoutRequest{AddressID: b.address, PaymentMethod: order.PayCard}
	if r.cfg.Scenario == ScenarioCartMix {
		for _, l := range b.lines {
			body.CartSKUIDs = append(body.CartSKUIDs, l.SKUID)
		}
	} else {
		body.Items = b.lines
	}
	// Retries (429, 503, in flight, transport errors) go on with the same
	// key for a while: a buyer that waited this long has left.
	ctx, cancel := context.WithTimeout(ctx, max(r.cfg.Timeout, checkoutBudget))
	defer cancel()
	acc, _, err := r.api.checkout(ctx, b.token, "fb-"+r.runID+"-order-"+fmt.Sprint(i), body)
	if err != nil {
		o.Err, o.HTTPStatus, o.Response = err.Error(), statusOf(err), describeFailure(err)
		r.failed.Add(1)
		return false
	}
	o.AcceptedAt, o.OrderID, o.HTTPStatus = time.Now(), acc.OrderID, 202
	r.accepted.Add(1)
	return true
}

// awaitDecision waits for buyer i's order to leave pending, by long poll or
// SSE, until ctx ends (then the order is lost).
func (r *runner) awaitDecision(ctx context.Context, i int) {
	b, o := &r.buyers[i], &r.outs[i]
	for attempt := 0; ; attempt++ {
		var st orderStatus
		var err error
		if r.cfg.Wait == "sse" {
			st, err = r.api.waitSSE(ctx, b.token, o.OrderID)
		} else {
			st, err = r.api.waitPoll(ctx, b.token, o.OrderID)
		}
		if err == nil && st.decided() {
			o.DecidedAt, o.Status, o.Reason, o.Err = time.Now(), st.Status, st.RejectReason, ""
			r.decided.Add(1)
			return
		}
		if err != nil {
			o.Err = "wait: " + err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Duration(attempt+1)*250*time.Millisecond, 2*time.Second)):
			r.api.retries.Add(1)
		}
	}
}

// previewOnce asks for one preview of a buyer's 3-line cart.
func (r *runner) previewOnce(ctx context.Context, i int, due time.Time) {
	b := &r.buyers[i%len(r.buyers)]
	ids := make([]uuid.UUID, len(b.lines))
	for j, l := range b.lines {
		ids[j] = l.SKUID
	}
	err := r.api.preview(ctx, b.token, ids)
	o := outcome{Buyer: i % len(r.buyers), Due: due}
	if err != nil {
		if ctx.Err() != nil {
			return // the run ended while it was in flight
		}
		o.Err, o.HTTPStatus, o.Response = err.Error(), statusOf(err), describeFailure(err)
		r.failed.Add(1)
	} else {
		o.AcceptedAt, o.HTTPStatus = time.Now(), 200
		r.accepted.Add(1)
	}
	r.outsMu.Lock()
	r.outs = append(r.outs, o)
	r.outsMu.Unlock()
}

// pollStock samples the stock left, summed over the run's SKUs, once per
// second until the returned function is called.
func (r *runner) pollStock(parent context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	sample := func(ctx context.Context, at time.Duration) {
		var left int64
		for _, s := range r.skus {
			got, err := r.api.sku(ctx, r.admin, s.ID)
			if err != nil {
				return // a missed sample is a gap in the chart, nothing more
			}
			left += got.Stock
		}
		r.lastStock.Store(left)
		r.stock = append(r.stock, StockSample{At: at, Left: left})
	}
	var initial int64
	for _, s := range r.skus {
		initial += s.Stock
	}
	r.lastStock.Store(initial)
	r.stock = append(r.stock, StockSample{At: 0, Left: initial})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sample(ctx, time.Since(r.start))
			}
		}
	}()
	return func() {
		cancel()
		<-done
		sample(parent, time.Since(r.start)) // the final stock, after the decisions
	}
}
