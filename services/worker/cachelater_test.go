package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/order"
)

// A decision committed outside a command message (the reservation
// sweeper's rejection, the expiry sweep's expiration) has no redelivery to
// cache it again when the status cache is down: cacheLater retries it until
// Redis answers, so the cache does not keep the order pending for a day
// (make chaos found an order rejected by the sweeper during a Redis restart
// that read pending through a fresh ingress).
func TestRetryUntilRetriesUntilSuccess(t *testing.T) {
	t.Parallel()
	calls := 0
	err := retryUntil(context.Background(), time.Millisecond, 4*time.Millisecond, func() error {
		if calls++; calls < 5 {
			return errors.New("LOADING Redis is loading the dataset in memory")
		}
		return nil
	})
	if err != nil || calls != 5 {
		t.Errorf("retryUntil: %v after %d calls; want nil after 5", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	calls = 0
	err = retryUntil(ctx, time.Millisecond, 2*time.Millisecond, func() error { calls++; return errors.New("down") })
	if !errors.Is(err, context.DeadlineExceeded) || calls == 0 {
		t.Errorf("retryUntil with a dead store: %v after %d calls; want the context's error after some", err, calls)
	}
}

// TestCacheFailureAtTheLastDelivery: a batch committed at its message's
// last delivery while Redis is down is acked (no redelivery will come to
// cache it), so its decisions must reach the status cache once Redis is
// back, not stay pending there for a day.
func TestCacheFailureAtTheLastDelivery(t *testing.T) {
	e := newEnv(t, 2)
	proxy, viaProxy := e.redisThroughProxy()
	w := withRedis(e.worker("w", func(c *Config) { c.MaxDeliver = 1 }), viaProxy)
	sku := e.sku(1, 5, 0)
	c := e.checkout("u1", sku, 1)
	e.cachePending(c)

	proxy.setDown(true)
	m := newFakeMsg(t, c) // its first delivery is its last (MaxDeliver 1)
	ctx := context.Background()
	newPartitionLoop(w, 1, nil).process(ctx, ctx, []jetstream.Msg{m})
	if a, n, tm := m.settled(); a != 1 || n != 0 || tm != 0 {
		t.Fatalf("message settled with %d acks %d naks %d terms, want one ack", a, n, tm)
	}
	if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
		t.Fatalf("order %s in PostgreSQL, want confirmed", st)
	}
	proxy.setDown(false)
	e.waitCached([]uuid.UUID{c.Checkout.OrderID}, 20*time.Second)
}

// TestCacheFailureInApplyEach: when a constraint makes a message's
// commands apply one by one (applyEach) while Redis is down, each
// committed decision reaches the status cache once Redis is back.
func TestCacheFailureInApplyEach(t *testing.T) {
	e := newEnv(t, 2)
	proxy, viaProxy := e.redisThroughProxy()
	w := withRedis(e.worker("w"), viaProxy)
	// A constraint refuses the commands together, never alone.
	w.applyHook = func(_ int, cmds []order.Command) error {
		if len(cmds) > 1 {
			return order.Errorf(order.EINVALID, "violates a constraint")
		}
		return nil
	}
	sku := e.sku(1, 5, 0)
	c1, c2 := e.checkout("u1", sku, 1), e.checkout("u2", sku, 1)
	e.cachePending(c1, c2)

	proxy.setDown(true)
	m := newFakeMsg(t, c1, c2)
	ctx := context.Background()
	newPartitionLoop(w, 1, nil).process(ctx, ctx, []jetstream.Msg{m})
	if a, n, tm := m.settled(); a != 1 || n != 0 || tm != 0 {
		t.Fatalf("message settled with %d acks %d naks %d terms, want one ack", a, n, tm)
	}
	ids := []uuid.UUID{c1.Checkout.OrderID, c2.Checkout.OrderID}
	for _, id := range ids {
		if st, _ := e.status(id); st != order.StatusConfirmed {
			t.Fatalf("order %s in PostgreSQL, want confirmed", st)
		}
	}
	proxy.setDown(false)
	e.waitCached(ids, 20*time.Second)
}
