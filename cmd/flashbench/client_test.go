package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		h    string
		want time.Duration
	}{
		{"", 500 * time.Millisecond},
		{"garbage", 500 * time.Millisecond},
		{"0", 50 * time.Millisecond},
		{"2", 2 * time.Second},
		{"0.25", 250 * time.Millisecond},
		{"3600", 10 * time.Second},
		{now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.h, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tt.h, got, tt.want)
		}
	}
}

func TestCheckoutRetriesWithTheSameKey(t *testing.T) {
	var calls atomic.Int32
	keys := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys <- r.Header.Get("Idempotency-Key")
		switch calls.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			w.WriteHeader(http.StatusConflict) // the first attempt is still in flight
		default:
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(`{"order_id":"7b0c3a52-6a7e-4d39-9a0f-8f3f7f0d2c11","status":"pending"}`))
		}
	}))
	defer srv.Close()
	c := newClient(srv.URL, 2)
	acc, retries, err := c.checkout(context.Background(), "tok", "key-1", checkoutRequest{})
	if err != nil || acc.OrderID.String() != "7b0c3a52-6a7e-4d39-9a0f-8f3f7f0d2c11" {
		t.Fatalf("checkout = %+v, %v", acc, err)
	}
	if retries != 3 || c.retries.Load() != 3 {
		t.Errorf("retries %d (client %d), want 3", retries, c.retries.Load())
	}
	close(keys)
	for k := range keys {
		if k != "key-1" {
			t.Errorf("a retry sent Idempotency-Key %q, want key-1", k)
		}
	}
}

func TestCheckoutDoesNotRetryA422(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		w.Write([]byte(`{"type":"x/invalid","title":"invalid checkout","status":422,"detail":"address_id: not yours"}`))
	}))
	defer srv.Close()
	_, _, err := newClient(srv.URL, 2).checkout(context.Background(), "tok", "k", checkoutRequest{})
	if statusOf(err) != 422 || calls.Load() != 1 {
		t.Errorf("err %v after %d calls, want a 422 after 1", err, calls.Load())
	}
	if got := describeFailure(err); got != "422 invalid checkout" {
		t.Errorf("describeFailure = %q", got)
	}
}

func TestReadSSE(t *testing.T) {
	tests := []struct {
		name, stream string
		want         order.Status
		reason       order.RejectReason
	}{
		{"orderd's format", "retry: 2000\n\nid: pending\nevent: pending\ndata: {\"status\":\"pending\"}\n\n: heartbeat\n\nid: rejected\nevent: rejected\ndata: {\"id\":\"x\",\"status\":\"rejected\",\"reject_reason\":\"out_of_stock\"}\n\n", order.StatusRejected, order.RejectOutOfStock},
		{"stops at the decision", "event: confirmed\ndata: {\"status\":\"confirmed\"}\n\nevent: paid\ndata: {\"status\":\"paid\"}\n\n", order.StatusConfirmed, ""},
		{"a CloudEvent", "data: {\"type\":\"order.confirmed\",\"data\":{\"status\":\"confirmed\"}}\n\n", order.StatusConfirmed, ""},
		{"the event name alone", "event: order.rejected\ndata: {}\n\n", order.StatusRejected, ""},
		{"ends while pending", "event: pending\ndata: {\"status\":\"pending\"}\n\n", order.StatusPending, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := readSSE(strings.NewReader(tt.stream))
			if err != nil || st.Status != tt.want || st.RejectReason != tt.reason {
				t.Errorf("readSSE = %+v, %v; want %s %s", st, err, tt.want, tt.reason)
			}
		})
	}
}
