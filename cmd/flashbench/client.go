package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// client speaks the service's HTTP API (SPEC 3) as a real client does.
type client struct {
	base    string
	hc      *http.Client
	retries atomic.Int64 // requests sent again after a 429, 503, 409 or a transport error
}

// newClient returns a client of the service at base with a transport tuned
// for conns concurrent keep-alive connections.
func newClient(base string, conns int) *client {
	tr := &http.Transport{
		Proxy:                 nil, // the service is local: never go through a proxy
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // long polls hold the header back; requests carry their own deadline
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	return &client{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr}}
}

// close releases the client's idle connections.
func (c *client) close() { c.hc.CloseIdleConnections() }

// problem is an answer other than the one expected: an RFC 9457 problem or
// whatever else the server said.
type problem struct {
	Status int    `json:"status"`
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (p *problem) Error() string {
	msg := p.Title
	if p.Detail != "" {
		msg += ": " + p.Detail
	}
	return fmt.Sprintf("HTTP %d %s", p.Status, truncate(msg, 200))
}

// statusOf returns the HTTP status of a problem error, or 0 for a transport
// error.
func statusOf(err error) int {
	var p *problem
	if errors.As(err, &p) {
		return p.Status
	}
	return 0
}

// request is one API call.
type request struct {
	method, path string
	token        string
	idemKey      string // Idempotency-Key header
	body         any    // JSON-encoded when not nil
	want         int    // the expected status; 0 = any 2xx
	timeout      time.Duration
	retry409     bool // a 409 means "in flight": ask again (checkout with an Idempotency-Key)
}

// maxAttempts bounds how often one request is sent. Checkouts and waits
// are bounded by their context first (a buyer's budget): a restart of the
// ingress, NATS, PostgreSQL or Redis takes seconds, and a real client keeps
// retrying with the same Idempotency-Key through it.
const maxAttempts = 400

// backoff is the pause before attempt+1 after a transport error or a 5xx
// without Retry-After: 100 ms, doubling, at most 1 s.
func backoff(attempt int) time.Duration {
	return min(100*time.Millisecond<<min(attempt, 4), time.Second)
}

// do sends r, decoding a response with status r.want into out (if not nil).
// It sends the same request again, with the same Idempotency-Key, after a
// 429 or 503 (waiting for Retry-After), after a 409 if r.retry409, and after
// a transport error, until ctx ends. It returns how often it retried.
func (c *client) do(ctx context.Context, r request, out any) (int, error) {
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", r.method, r.path, err)
		}
	}
	retries := 0
	for attempt := 1; ; attempt++ {
		wait, err := c.once(ctx, r, body, out)
		if wait == retryBackoff {
			wait = backoff(attempt - 1)
		}
		if err == nil || wait < 0 || attempt >= maxAttempts {
			return retries, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return retries, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
		retries++
		c.retries.Add(1)
	}
}

// retryBackoff is what once returns as the wait when the pause before the
// next attempt should grow with the attempts (backoff).
const retryBackoff = time.Duration(-2)

// once sends r one time. A non-negative wait (or retryBackoff) with an
// error means the request may be sent again after wait.
func (c *client) once(parent context.Context, r request, body []byte, out any) (time.Duration, error) {
	ctx := parent
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(parent, r.timeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, rd)
	if err != nil {
		return -1, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.idemKey != "" {
		req.Header.Set("Idempotency-Key", r.idemKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return -1, err
		}
		return retryBackoff, err // connection refused or reset, or this attempt timed out
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return retryBackoff, fmt.Errorf("%s %s: read body: %w", r.method, r.path, err)
	}
	if resp.StatusCode == r.want || (r.want == 0 && resp.StatusCode/100 == 2) {
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return -1, fmt.Errorf("%s %s: decode %d answer: %w", r.method, r.path, resp.StatusCode, err)
			}
		}
		return 0, nil
	}
	p := &problem{}
	if json.Unmarshal(data, p) != nil || p.Title == "" {
		p.Title = strings.TrimSpace(truncate(string(data), 200))
	}
	p.Status = resp.StatusCode
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		return retryAfter(resp.Header.Get("Retry-After"), time.Now()), p
	case resp.StatusCode == http.StatusConflict && r.retry409:
		return 100 * time.Millisecond, p
	case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout,
		resp.StatusCode == http.StatusInternalServerError && r.idempotent():
		// A dependency failed mid-request (a store restarting under it):
		// sending the same request again is safe for a read and for a
		// checkout with an Idempotency-Key, and it is what a real client does.
		return retryBackoff, p
	}
	return -1, p
}

// idempotent reports whether sending r twice has the effect of sending it
// once: a GET, or a request with an Idempotency-Key.
func (r request) idempotent() bool { return r.method == http.MethodGet || r.idemKey != "" }

// retryAfter parses a Retry-After header (seconds or an HTTP date) into a
// wait between 50 ms and 10 s; 500 ms when it is absent or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	d := 500 * time.Millisecond
	if s, err := strconv.ParseFloat(strings.TrimSpace(h), 64); err == nil {
		d = time.Duration(s * float64(time.Second))
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 50*time.Millisecond), 10*time.Second)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// createSKU creates a SKU as the admin.
func (c *client) createSKU(ctx context.Context, admin string, s order.NewSKU) (order.SKU, error) {
	var out order.SKU
	_, err := c.do(ctx, request{method: "POST", path: "/v1/skus", token: admin, body: s, want: http.StatusCreated, timeout: 30 * time.Second}, &out)
	return out, err
}

// sku reads a SKU.
func (c *client) sku(ctx context.Context, token string, id uuid.UUID) (order.SKU, error) {
	var out order.SKU
	_, err := c.do(ctx, request{method: "GET", path: "/v1/skus/" + id.String(), token: token, want: http.StatusOK, timeout: 5 * time.Second}, &out)
	return out, err
}

// createAddress adds an address for the token's user and returns its id.
func (c *client) createAddress(ctx context.Context, token string, a order.NewAddress) (uuid.UUID, error) {
	var out struct {
		ID uuid.UUID `json:"id"`
	}
	_, err := c.do(ctx, request{method: "POST", path: "/v1/addresses", token: token, body: a, want: http.StatusCreated, timeout: 30 * time.Second}, &out)
	if err == nil && out.ID == uuid.Nil {
		err = errors.New("POST /v1/addresses: answer without an id")
	}
	return out.ID, err
}

// setCartItem puts quantity units of a SKU in the token's user's cart.
func (c *client) setCartItem(ctx context.Context, token string, sku uuid.UUID, quantity int64) error {
	body := map[string]int64{"quantity": quantity}
	// The answer (200 with the cart) does not matter, only that it is a 2xx.
	_, err := c.do(ctx, request{method: "PUT", path: "/v1/cart/items/" + sku.String(), token: token, body: body, timeout: 30 * time.Second}, nil)
	return err
}

// checkoutRequest is the body of POST /v1/orders (SPEC 3.2).
type checkoutRequest struct {
	AddressID     uuid.UUID           `json:"address_id"`
	PaymentMethod order.PaymentMethod `json:"payment_method"`
	Items         []order.LineRequest `json:"items,omitempty"`
	CartSKUIDs    []uuid.UUID         `json:"cart_sku_ids,omitempty"`
}

// accepted is the 202 answer of a checkout.
type accepted struct {
	OrderID     uuid.UUID `json:"order_id"`
	OrderNumber string    `json:"order_number"`
	Status      string    `json:"status"`
}

// checkout places an order with an Idempotency-Key, retrying with the same
// key until ctx ends. It returns the answer and how often it retried.
func (c *client) checkout(ctx context.Context, token, key string, body checkoutRequest) (accepted, int, error) {
	var out accepted
	n, err := c.do(ctx, request{
		method: "POST", path: "/v1/orders", token: token, idemKey: key, body: body,
		want: http.StatusAccepted, timeout: 30 * time.Second, retry409: true,
	}, &out)
	if err == nil && out.OrderID == uuid.Nil {
		err = errors.New("POST /v1/orders: 202 without an order_id")
	}
	return out, n, err
}

// preview asks for the preview of a cart checkout.
func (c *client) preview(ctx context.Context, token string, skus []uuid.UUID) error {
	body := map[string][]uuid.UUID{"cart_sku_ids": skus}
	_, err := c.do(ctx, request{method: "POST", path: "/v1/checkout/preview", token: token, body: body, want: http.StatusOK, timeout: 30 * time.Second}, nil)
	return err
}

// orderStatus is what the client learns of an order while it waits.
type orderStatus struct {
	Status       order.Status       `json:"status"`
	RejectReason order.RejectReason `json:"reject_reason"`
}

// decided reports whether the order's decision is known: it left pending.
func (s orderStatus) decided() bool { return s.Status != "" && s.Status != order.StatusPending }

// orderNow reads an order's status without waiting.
func (c *client) orderNow(ctx context.Context, token string, id uuid.UUID) (orderStatus, error) {
	var st orderStatus
	_, err := c.do(ctx, request{method: "GET", path: "/v1/orders/" + id.String(), token: token, want: http.StatusOK, timeout: 10 * time.Second}, &st)
	return st, err
}

// longPollWait is how long one long poll asks the server to hold the answer.
const longPollWait = 25 * time.Second

// waitPoll long-polls GET /v1/orders/{id}?wait=25s until the order leaves
// pending or ctx ends.
func (c *client) waitPoll(ctx context.Context, token string, id uuid.UUID) (orderStatus, error) {
	path := "/v1/orders/" + id.String() + "?wait=" + longPollWait.String()
	for {
		var st orderStatus
		_, err := c.do(ctx, request{method: "GET", path: path, token: token, want: http.StatusOK, timeout: longPollWait + 10*time.Second}, &st)
		if err != nil {
			return st, err
		}
		if st.decided() {
			return st, nil
		}
	}
}

// waitSSE follows GET /v1/orders/{id}/events until it shows a decision,
// reconnecting when the stream ends early, until ctx ends.
func (c *client) waitSSE(ctx context.Context, token string, id uuid.UUID) (orderStatus, error) {
	var last error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		st, err := c.sseOnce(ctx, token, id)
		if err == nil && st.decided() {
			return st, nil
		}
		if err != nil {
			last = err
			if statusOf(err) >= 400 && statusOf(err) < 500 && statusOf(err) != http.StatusTooManyRequests {
				return st, err
			}
		}
		if attempt > 0 {
			c.retries.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)):
		}
	}
	if last == nil {
		last = ctx.Err()
	}
	return orderStatus{}, last
}

func (c *client) sseOnce(ctx context.Context, token string, id uuid.UUID) (orderStatus, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/orders/"+id.String()+"/events", nil)
	if err != nil {
		return orderStatus{}, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return orderStatus{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		p := &problem{}
		if json.Unmarshal(data, p) != nil || p.Title == "" {
			p.Title = strings.TrimSpace(truncate(string(data), 200))
		}
		p.Status = resp.StatusCode
		return orderStatus{}, p
	}
	return readSSE(resp.Body)
}

// readSSE reads Server-Sent Events until one carries a decided status, and
// returns it; or the last status seen when the stream ends.
func readSSE(r io.Reader) (orderStatus, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var (
		event string
		data  strings.Builder
		last  orderStatus
	)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 || event != "" {
				if st, ok := parseSSEEvent(event, data.String()); ok {
					last = st
					if st.decided() {
						return st, nil
					}
				}
			}
			event = ""
			data.Reset()
		case strings.HasPrefix(line, ":"): // a comment (keep-alive)
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	return last, sc.Err()
}

// parseSSEEvent finds an order status in one event: the data is the order
// (or a CloudEvent whose data is the order), else the event's name is the
// status or the CloudEvent type ("order.confirmed").
func parseSSEEvent(event, data string) (orderStatus, bool) {
	var v struct {
		orderStatus
		Type string       `json:"type"`
		Data *orderStatus `json:"data"`
	}
	if json.Unmarshal([]byte(data), &v) == nil {
		if v.Status != "" {
			return v.orderStatus, true
		}
		if v.Data != nil && v.Data.Status != "" {
			return *v.Data, true
		}
		if event == "" {
			event = v.Type
		}
	}
	name := order.Status(strings.TrimPrefix(event, "order."))
	switch name {
	case order.StatusPending, order.StatusConfirmed, order.StatusRejected, order.StatusPaid, order.StatusExpired, order.StatusCancelled:
		return orderStatus{Status: name}, true
	}
	return orderStatus{}, false
}
