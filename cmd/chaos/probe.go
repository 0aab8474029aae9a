package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

// The probe measures recovery: it places, round after round, one order on
// a SKU of every partition (one probe buyer per partition, so that no
// per-user limit applies) and waits for their decisions. A fault's
// recovery time is the time from the fault to the end of the first round
// that started after it and saw every order accepted and confirmed: the
// system accepted and decided orders again, in every partition. The probe
// SKUs are the probe's own (a large stock), so the scenarios' checks are
// not disturbed.

// apiClient is the few API calls the orchestrator makes itself.
type apiClient struct {
	base string
	hc   *http.Client
}

func newAPIClient(base string) *apiClient {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true}
	return &apiClient{base: base, hc: &http.Client{Transport: tr}}
}

// call sends one request and decodes a 2xx answer into out. It returns the
// status (0 for a transport error).
func (c *apiClient) call(ctx context.Context, method, path, token, key string, body, out any, timeout time.Duration) (int, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: HTTP %d: %.200s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// retry calls until it succeeds, a 4xx other than 409 and 429 answers, or
// ctx ends: what a real client does through a restart.
func (c *apiClient) retry(ctx context.Context, method, path, token, key string, body, out any) error {
	for attempt := 0; ; attempt++ {
		st, err := c.call(ctx, method, path, token, key, body, out, 15*time.Second)
		if err == nil {
			return nil
		}
		if st >= 400 && st < 500 && st != http.StatusConflict && st != http.StatusTooManyRequests {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(min(100*time.Millisecond<<min(attempt, 3), time.Second)):
		}
	}
}

// probeRound is one round of the probe.
type probeRound struct {
	Start, End time.Time
	OK         bool
	Err        string
	Slowest    int // the partition whose order was decided last
}

// probe places the probe orders.
type probe struct {
	api        *apiClient
	partitions int
	skus       []uuid.UUID // one per partition
	tokens     []string
	addrs      []uuid.UUID
	runID      string

	mu     sync.Mutex
	rounds []probeRound
	seq    int
}

// setupProbe creates a SKU in every partition and a buyer with an address
// for each.
func setupProbe(ctx context.Context, api *apiClient, secret []byte, partitions int, runID string) (*probe, error) {
	p := &probe{api: api, partitions: partitions, runID: runID,
		skus: make([]uuid.UUID, partitions), tokens: make([]string, partitions), addrs: make([]uuid.UUID, partitions)}
	admin, err := auth.Mint(secret, "chaos-"+runID+"-admin", true, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	found := 0
	for i := 0; found < partitions; i++ {
		if i > 50*partitions {
			return nil, fmt.Errorf("probe: no SKU landed in %d of the %d partitions", partitions-found, partitions)
		}
		price, stock, hold := int64(100), int64(1_000_000), int64(3600)
		var sku order.SKU
		err := api.retry(ctx, "POST", "/v1/skus", admin, "", order.NewSKU{
			Name: fmt.Sprintf("chaos probe %s #%d", runID, i), Price: &price, Currency: "EUR", Stock: &stock, PaymentHoldSeconds: &hold,
		}, &sku)
		if err != nil {
			return nil, fmt.Errorf("probe: create SKU: %w", err)
		}
		if part := order.Partition(sku.ID, partitions); p.skus[part] == uuid.Nil {
			p.skus[part] = sku.ID
			found++
		}
	}
	for i := range partitions {
		if p.tokens[i], err = auth.Mint(secret, fmt.Sprintf("chaos-%s-probe-%d", runID, i), false, 24*time.Hour); err != nil {
			return nil, err
		}
		var a struct {
			ID uuid.UUID `json:"id"`
		}
		err := api.retry(ctx, "POST", "/v1/addresses", p.tokens[i], "", order.NewAddress{
			Recipient: "Chaos Probe", Line1: "1 Probe St", City: "Berlin", PostalCode: "10115", Country: "DE",
		}, &a)
		if err != nil {
			return nil, fmt.Errorf("probe: create address: %w", err)
		}
		p.addrs[i] = a.ID
	}
	return p, nil
}

// run runs rounds until ctx ends, pause apart.
func (p *probe) run(ctx context.Context, pause, roundTimeout time.Duration) {
	for ctx.Err() == nil {
		r := p.round(ctx, roundTimeout)
		if ctx.Err() != nil && !r.OK {
			return // cut short by the end of the run: not a result
		}
		p.mu.Lock()
		p.rounds = append(p.rounds, r)
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// round places one order per partition and waits for all decisions.
func (p *probe) round(parent context.Context, timeout time.Duration) probeRound {
	r := probeRound{Start: time.Now()}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.mu.Unlock()
	errs := make([]error, p.partitions)
	ends := make([]time.Time, p.partitions)
	var wg sync.WaitGroup
	for i := range p.partitions {
		wg.Go(func() { errs[i] = p.one(ctx, i, seq); ends[i] = time.Now() })
	}
	wg.Wait()
	r.End, r.OK = time.Now(), true
	for i, t := range ends {
		if t.After(ends[r.Slowest]) {
			r.Slowest = i
		}
	}
	for _, err := range errs {
		if err != nil {
			r.OK, r.Err = false, err.Error()
			break
		}
	}
	return r
}

// one places the probe order of partition i and waits until it is decided.
func (p *probe) one(ctx context.Context, i, seq int) error {
	body := map[string]any{
		"address_id":     p.addrs[i],
		"payment_method": "card",
		"items":          []order.LineRequest{{SKUID: p.skus[i], Quantity: 1}},
	}
	var acc struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	key := fmt.Sprintf("chaos-%s-probe-%d-%d", p.runID, i, seq)
	if err := p.api.retry(ctx, "POST", "/v1/orders", p.tokens[i], key, body, &acc); err != nil {
		return fmt.Errorf("partition %d: checkout: %w", i, err)
	}
	for attempt := 0; ; attempt++ {
		var st struct {
			Status       order.Status `json:"status"`
			RejectReason string       `json:"reject_reason"`
		}
		err := p.api.retry(ctx, "GET", "/v1/orders/"+acc.OrderID.String()+"?wait=10s", p.tokens[i], "", nil, &st)
		if err != nil {
			return fmt.Errorf("partition %d: order %s: %w", i, acc.OrderID, err)
		}
		switch st.Status {
		case order.StatusConfirmed, order.StatusPaid:
			return nil
		case order.StatusRejected, order.StatusExpired, order.StatusCancelled:
			return fmt.Errorf("partition %d: order %s %s %s", i, acc.OrderID, st.Status, st.RejectReason)
		}
	}
}

// recovery returns the time from at to the end of the first successful
// round that started at or after effective (when the fault was surely in
// effect), and whether there is one.
// The round's slowest partition is the one that held the recovery up.
func (p *probe) recovery(at, effective time.Time) (time.Duration, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rounds {
		if r.OK && !r.Start.Before(effective) {
			return r.End.Sub(at), r.Slowest, true
		}
	}
	return 0, 0, false
}

// failedRounds counts the rounds that failed (an order rejected, or not
// decided within the round's timeout).
func (p *probe) stats() (rounds, failed int, lastErr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rounds {
		rounds++
		if !r.OK {
			failed++
			lastErr = r.Err
		}
	}
	return rounds, failed, lastErr
}
