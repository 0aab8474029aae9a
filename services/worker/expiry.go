package worker

import (
	"context"
	"errors"
	"time"

	"github.com/flashsale/orderd/pkg/postgres"
)

// expiryEvery is how often a partition loop sweeps its partition for
// confirmed orders whose payment hold has passed.
const expiryEvery = time.Second

// expiryBatch bounds the orders one sweep transaction expires.
const expiryBatch = 200

// expiry is a partition loop's due-order sweep: the durable timer of
// payment holds is the orders_hold_due index, swept by the partition that
// is the orders' home, in its own transactions.
type expiry struct {
	last      time.Time // when the last sweep started
	notPinned bool      // the last pull said another worker holds the pin
}

// expire sweeps the partition if a sweep is due: it expires the orders of
// this home partition still confirmed past their hold, in transactions of
// up to expiryBatch orders, until none is left, and caches and announces
// what it expired like a batch. Only the partition's pinned owner sweeps
// (a loop told that another worker holds the pin does not); should two
// processes sweep at once (an idle partition has no pin yet, or during a
// takeover) the status guard, SKIP LOCKED and the processed rows make the
// second a no-op.
func (l *partitionLoop) expire(ctx context.Context) {
	if l.exp.notPinned || time.Since(l.exp.last) < expiryEvery {
		return
	}
	l.exp.last = time.Now()
	for attempt := 0; ctx.Err() == nil && attempt < maxConflictRetries; {
		res, err := l.w.d.DB.ExpireDue(ctx, l.p, l.w.pcfg, expiryBatch)
		if errors.Is(err, postgres.ErrBatchConflict) {
			attempt++
			l.w.m.conflicts.Inc()
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("expiry sweep failed; the next one tries again", "err", err)
			}
			return
		}
		if len(res.Orders) == 0 {
			return
		}
		l.w.count(res)
		if res.Outbox > 0 {
			l.w.wakeRelay()
		}
		for _, o := range res.Orders {
			l.log.Info("order expired", "order", o.ID, "hold_until", o.HoldUntil)
		}
		if err := l.w.cache(ctx, l.p, res); err != nil {
			l.log.Warn("status cache update after expiry failed; retrying in the background", "err", err)
			l.w.cacheLater(ctx, l.p, res)
		}
		if len(res.Orders) < expiryBatch {
			return
		}
	}
}
