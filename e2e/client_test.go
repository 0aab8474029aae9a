package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

// testSecret signs the tokens; orderd wants at least 32 bytes.
const testSecret = "e2e-secret-0123456789abcdef-0123456789"

// api is an HTTP client of one ingress, as a buyer or the admin uses it.
// Its methods return errors instead of failing the test, so that they can
// run on the goroutines of concurrent buyers; the must* helpers fail.
type api struct {
	base string
	hc   *http.Client
}

// newAPI returns a client of the ingress at base with a connection pool
// large enough for a thousand concurrent buyers.
func newAPI(t testing.TB, base string) *api {
	tr := &http.Transport{
		MaxIdleConns:        2000,
		MaxIdleConnsPerHost: 2000,
		IdleConnTimeout:     30 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &api{base: base, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// response is an answer with its body read.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r *response) String() string { return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body)) }

// decode decodes the body into out.
func (r *response) decode(out any) error {
	if err := json.Unmarshal(r.Body, out); err != nil {
		return fmt.Errorf("decode %s: %w", r, err)
	}
	return nil
}

// do sends a request with a JSON body (nil: none) and a bearer token
// (empty: none), and extra headers.
func (a *api) do(ctx context.Context, method, path, token string, body any, hdr http.Header) (*response, error) {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// call is do that wants status want and decodes the answer into out (if
// not nil).
func (a *api) call(ctx context.Context, method, path, token string, body any, want int, out any) error {
	resp, err := a.do(ctx, method, path, token, body, nil)
	if err != nil {
		return err
	}
	if resp.Status != want {
		return fmt.Errorf("%s %s = %s, want %d", method, path, resp, want)
	}
	if out != nil {
		return resp.decode(out)
	}
	return nil
}

// mustCall is call that fails the test.
func (a *api) mustCall(t testing.TB, method, path, token string, body any, want int, out any) {
	t.Helper()
	if err := a.call(context.Background(), method, path, token, body, want, out); err != nil {
		t.Fatal(err)
	}
}

// mint returns a token for user, signed with testSecret.
func mint(t testing.TB, user string, admin bool) string {
	t.Helper()
	tok, err := auth.Mint([]byte(testSecret), user, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// createSKU creates a SKU as the admin (price 1500 EUR) and returns it.
func (a *api) createSKU(t testing.TB, name string, stock int64) order.SKU {
	t.Helper()
	var s order.SKU
	a.mustCall(t, "POST", "/v1/skus", mint(t, "admin", true),
		map[string]any{"name": name, "price": 1500, "currency": "EUR", "stock": stock}, http.StatusCreated, &s)
	if s.ID == uuid.Nil || s.Stock != stock {
		t.Fatalf("created SKU %+v, want an id and stock %d", s, stock)
	}
	return s
}

// sku reads a SKU as user u.
func (a *api) sku(t testing.TB, id uuid.UUID) order.SKU {
	t.Helper()
	var s order.SKU
	a.mustCall(t, "GET", "/v1/skus/"+id.String(), mint(t, "reader", false), nil, http.StatusOK, &s)
	return s
}

// buyer is a user with a token and a shipping address.
type buyer struct {
	ID      string
	Token   string
	Address uuid.UUID
}

var runID = uuid.NewString()[:8]

var buyerSeq atomic.Int64

// newBuyers creates n users, each with an address made through the API,
// using a few concurrent clients.
func (a *api) newBuyers(t testing.TB, n int) []buyer {
	t.Helper()
	out := make([]buyer, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range min(n, 32) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id := fmt.Sprintf("buyer-%s-%d", runID, buyerSeq.Add(1))
				tok, err := auth.Mint([]byte(testSecret), id, false, time.Hour)
				if err != nil {
					errs <- err
					return
				}
				var addr struct {
					ID uuid.UUID `json:"id"`
				}
				body := order.NewAddress{Recipient: "Ada " + id, Line1: "1 Main Street", City: "Berlin", PostalCode: "10115", Country: "DE"}
				if err := a.call(context.Background(), "POST", "/v1/addresses", tok, body, http.StatusCreated, &addr); err != nil {
					errs <- err
					return
				}
				out[i] = buyer{ID: id, Token: tok, Address: addr.ID}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create buyers: %v", err)
	}
	return out
}

// accepted is the 202 answer of a checkout.
type accepted struct {
	OrderID     uuid.UUID    `json:"order_id"`
	OrderNumber string       `json:"order_number"`
	Status      order.Status `json:"status"`
	Links       struct {
		Self   string `json:"self"`
		Events string `json:"events"`
	} `json:"links"`
}

// directBody is a direct-purchase checkout of qty units of sku.
func directBody(b buyer, sku uuid.UUID, qty int64) map[string]any {
	return map[string]any{"address_id": b.Address, "payment_method": "card",
		"items": []order.LineRequest{{SKUID: sku, Quantity: qty}}}
}

// cartBody is a cart checkout of skus.
func cartBody(b buyer, skus ...uuid.UUID) map[string]any {
	return map[string]any{"address_id": b.Address, "payment_method": "card", "cart_sku_ids": skus}
}

// checkout posts a checkout with an Idempotency-Key (if not empty) and
// returns the 202's body, or an error for any other answer.
func (a *api) checkout(ctx context.Context, b buyer, body any, key string) (accepted, *response, error) {
	h := http.Header{}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	var acc accepted
	resp, err := a.do(ctx, "POST", "/v1/orders", b.Token, body, h)
	if err != nil {
		return acc, nil, err
	}
	if resp.Status != http.StatusAccepted {
		return acc, resp, fmt.Errorf("checkout of %s = %s, want 202", b.ID, resp)
	}
	if err := resp.decode(&acc); err != nil {
		return acc, resp, err
	}
	if acc.OrderID == uuid.Nil || acc.Status != order.StatusPending || resp.Header.Get("Location") != "/v1/orders/"+acc.OrderID.String() {
		return acc, resp, fmt.Errorf("checkout of %s: 202 %s with Location %q: want an order id, pending, and its Location", b.ID, resp.Body, resp.Header.Get("Location"))
	}
	return acc, resp, nil
}

// order reads an order as its buyer, long-polling up to wait (0: not)
// while it is pending.
func (a *api) order(ctx context.Context, b buyer, id uuid.UUID, wait time.Duration) (*order.Order, error) {
	return a.poll(ctx, b, id, wait, "")
}

// poll reads an order as its buyer, long-polling up to wait (0: not) while
// it is at the status since (empty: the server's default, pending).
func (a *api) poll(ctx context.Context, b buyer, id uuid.UUID, wait time.Duration, since order.Status) (*order.Order, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	if since != "" {
		q.Set("since", string(since))
	}
	path := "/v1/orders/" + id.String()
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var o order.Order
	if err := a.call(ctx, "GET", path, b.Token, nil, http.StatusOK, &o); err != nil {
		return nil, err
	}
	if o.ID != id || o.UserID != b.ID {
		return nil, fmt.Errorf("GET order %s as %s answered order %s of %s", id, b.ID, o.ID, o.UserID)
	}
	return &o, nil
}

// awaitDecision long-polls an order (?wait=10s) until it is no longer
// pending, or until ctx ends.
func (a *api) awaitDecision(ctx context.Context, b buyer, id uuid.UUID) (*order.Order, error) {
	return a.awaitStatusChange(ctx, b, id, order.StatusPending)
}

// awaitStatusChange long-polls an order (?wait=10s&since=from) until its
// status is not from, or until ctx ends.
func (a *api) awaitStatusChange(ctx context.Context, b buyer, id uuid.UUID, from order.Status) (*order.Order, error) {
	for {
		o, err := a.poll(ctx, b, id, 10*time.Second, from)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("order %s of %s still %s: %w", id, b.ID, from, ctx.Err())
			}
			return nil, err
		}
		if o.Status != from {
			return o, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("order %s of %s still %s: %w", id, b.ID, from, ctx.Err())
		}
	}
}

// cart returns a user's cart as SKU id -> quantity.
func (a *api) cart(t testing.TB, b buyer) map[uuid.UUID]int64 {
	t.Helper()
	var c struct {
		Items []struct {
			SKUID    uuid.UUID `json:"sku_id"`
			Quantity int64     `json:"quantity"`
		} `json:"items"`
	}
	a.mustCall(t, "GET", "/v1/cart", b.Token, nil, http.StatusOK, &c)
	out := map[uuid.UUID]int64{}
	for _, it := range c.Items {
		out[it.SKUID] = it.Quantity
	}
	return out
}

// eventually retries check every 50ms until it returns nil or d passed,
// and returns its last error.
func eventually(d time.Duration, check func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
