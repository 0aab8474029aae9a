package worker

import (
	"context"
	"errors"
	"testing"
	"time"
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
