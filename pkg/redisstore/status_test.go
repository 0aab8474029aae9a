package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// TestStatusCacheOnlyMovesForward: a cached status is replaced only by a
// later one (pending < confirmed < paid, expired, cancelled, rejected), so
// a worker that was paused between its commit and its cache write, or a
// retried cache write, cannot take an order back (paid -> confirmed), with
// any of the writers. The one exception: a rejection the ingress decided
// itself gives way to the database's decision (a retry's checkout reached
// the partition first).
func TestStatusCacheOnlyMovesForward(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	const (
		pending   = order.StatusPending
		confirmed = order.StatusConfirmed
		paid      = order.StatusPaid
		expired   = order.StatusExpired
		cancelled = order.StatusCancelled
		rejected  = order.StatusRejected
	)
	// The writers, as the code calls them.
	writers := map[string]func(o *order.Order) error{
		"PutOrders":      func(o *order.Order) error { return s.PutOrders(ctx, o) },
		"ApplyDecisions": func(o *order.Order) error { return s.ApplyDecisions(ctx, []*order.Order{o}, nil) },
		"ApplyPartition": func(o *order.Order) error { return s.ApplyPartition(ctx, 2, 1, []*order.Order{o}, nil) },
	}
	for _, c := range []struct {
		name      string
		first     order.Status
		ingress   bool // first written by PutDecided (the ingress's sold-out rejection)
		then      order.Status
		want      order.Status
		byIngress bool // then written by PutDecided
	}{
		{name: "pending to confirmed", first: pending, then: confirmed, want: confirmed},
		{name: "confirmed to paid", first: confirmed, then: paid, want: paid},
		{name: "confirmed to expired", first: confirmed, then: expired, want: expired},
		{name: "confirmed again", first: confirmed, then: confirmed, want: confirmed},
		{name: "paid back to confirmed", first: paid, then: confirmed, want: paid},
		{name: "expired back to confirmed", first: expired, then: confirmed, want: expired},
		{name: "cancelled back to confirmed", first: cancelled, then: confirmed, want: cancelled},
		{name: "paid then expired", first: paid, then: expired, want: paid},
		{name: "expired then cancelled", first: expired, then: cancelled, want: expired},
		{name: "anything back to pending", first: confirmed, then: pending, want: confirmed},
		{name: "ingress rejection over pending", first: pending, then: rejected, byIngress: true, want: rejected},
		{name: "ingress rejection over confirmed", first: confirmed, then: rejected, byIngress: true, want: confirmed},
		{name: "ingress rejection over paid", first: paid, then: rejected, byIngress: true, want: paid},
		{name: "ingress rejection, then the database's confirmation", first: rejected, ingress: true, then: confirmed, want: confirmed},
	} {
		writerNames := []string{"PutOrders", "ApplyDecisions", "ApplyPartition"}
		if c.byIngress {
			writerNames = []string{"PutDecided"}
		}
		for _, wn := range writerNames {
			t.Run(c.name+"/"+wn, func(t *testing.T) {
				now := time.Now().UTC().Truncate(time.Microsecond)
				o := &order.Order{ID: uuid.New(), Number: "FS-1", UserID: "u1", Status: c.first, Lines: []order.Line{}, AcceptedAt: now, UpdatedAt: now}
				var err error
				switch {
				case c.first == pending:
					_, err = s.PutPending(ctx, o, nil, redisstore.NoQueue)
				case c.ingress:
					err = s.PutDecided(ctx, o, nil)
				default:
					err = s.PutOrders(ctx, o)
				}
				if err != nil {
					t.Fatal(err)
				}
				next := *o
				next.Status = c.then
				if wn == "PutDecided" {
					err = s.PutDecided(ctx, &next, nil)
				} else {
					err = writers[wn](&next)
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := s.OrderStatus(ctx, o.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != c.want {
					t.Errorf("cached %s, then %s by %s: the cache says %s, want %s", c.first, c.then, wn, got.Status, c.want)
				}
			})
		}
	}
}

// BenchmarkApplyPartition caches a partition batch of 500 decided orders
// over their pending states, as a worker does after each transaction.
func BenchmarkApplyPartition(b *testing.B) {
	s, _ := redistest.New(b)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	orders := make([]*order.Order, 500)
	for i := range orders {
		orders[i] = &order.Order{ID: uuid.New(), Number: "FS-20261204-000000001", UserID: "user-" + uuid.NewString()[:8], Status: order.StatusConfirmed,
			Lines: []order.Line{{SKUID: uuid.New(), Name: "Sneaker", Quantity: 1, UnitPrice: 12900, LineTotal: 12900}}, Currency: "EUR",
			Subtotal: 12900, ShippingFee: 1000, GrandTotal: 13900, AcceptedAt: now, DecidedAt: &now, UpdatedAt: now}
		pending := *orders[i]
		pending.Status = order.StatusPending
		if _, err := s.PutPending(ctx, &pending, nil, redisstore.NoQueue); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.ApplyPartition(ctx, 0, len(orders), orders, nil); err != nil {
			b.Fatal(err)
		}
	}
}
