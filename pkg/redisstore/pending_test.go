package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

func pendingOrder(user string, at time.Time) *order.Order {
	at = at.UTC().Truncate(time.Microsecond)
	return &order.Order{ID: uuid.New(), Number: "FS-1", UserID: user, Status: order.StatusPending,
		Lines: []order.Line{{SKUID: uuid.New(), Quantity: 1}}, AcceptedAt: at, UpdatedAt: at}
}

func TestPutPending(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	now := time.Now()
	o1, o2 := pendingOrder("u1", now.Add(-time.Second)), pendingOrder("u1", now)
	rec := &order.Idempotency{RequestHash: "h", Command: order.Command{ID: o2.ID, Kind: order.KindCheckout}}
	for _, c := range []struct {
		o   *order.Order
		rec *order.Idempotency
	}{{o1, nil}, {o2, rec}} {
		wrote, err := s.PutPending(ctx, c.o, c.rec, redisstore.NoQueue)
		if err != nil || !wrote {
			t.Fatalf("PutPending: %v, %v", wrote, err)
		}
	}
	got, err := s.OrderStatus(ctx, o1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(o1, got); diff != "" {
		t.Errorf("cached (-want +got):\n%s", diff)
	}
	// A decision that arrived first is never overwritten.
	decided := *o1
	decided.Status = order.StatusConfirmed
	if err := s.PutOrders(ctx, &decided); err != nil {
		t.Fatal(err)
	}
	if wrote, err := s.PutPending(ctx, o1, nil, redisstore.NoQueue); err != nil || wrote {
		t.Errorf("PutPending over a decision: %v, %v; want false", wrote, err)
	}
	if err := s.CacheOrder(ctx, o1); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.OrderStatus(ctx, o1.ID); got.Status != order.StatusConfirmed {
		t.Errorf("CacheOrder overwrote a decision: %s", got.Status)
	}

	recent, err := s.RecentOrders(ctx, "u1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 2 || recent[0].ID != o2.ID || recent[1].ID != o1.ID {
		t.Errorf("recent %v: want o2 then o1", recent)
	}
	if r, _ := s.RecentOrders(ctx, "u2", 10); len(r) != 0 {
		t.Errorf("u2 has recent orders %v", r)
	}

	gotRec, err := s.Idempotency(ctx, o2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, gotRec); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	gotRec.Published = true
	if err := s.PutIdempotency(ctx, o2.ID, gotRec); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Idempotency(ctx, o2.ID); !r.Published {
		t.Error("PutIdempotency did not mark the record published")
	}
	if _, err := s.Idempotency(ctx, o1.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("no record: %v, want ENOTFOUND", err)
	}

	// DropPending takes the order out of the cache and the index, and
	// keeps the record.
	if err := s.DropPending(ctx, o2, redisstore.NoQueue); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OrderStatus(ctx, o2.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("dropped order: %v, want ENOTFOUND", err)
	}
	if r, _ := s.RecentOrders(ctx, "u1", 10); len(r) != 1 || r[0].ID != o1.ID {
		t.Errorf("recent after the drop: %v", r)
	}
	if _, err := s.Idempotency(ctx, o2.ID); err != nil {
		t.Errorf("record after the drop: %v", err)
	}
}

func TestClaimIdempotency(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	id := uuid.New()
	first, err := s.ClaimIdempotency(ctx, id, time.Minute)
	if err != nil || !first.Held || first.Record != nil {
		t.Fatalf("first claim: %+v, %v; want held, no record", first, err)
	}
	if c, _ := s.ClaimIdempotency(ctx, id, time.Minute); c.Held {
		t.Error("a second holder got the lock")
	}
	if c, _ := s.ClaimIdempotency(ctx, uuid.New(), time.Minute); !c.Held {
		t.Error("another key's lock is taken")
	}
	// Released with a record: the next claim reads it.
	rec := &order.Idempotency{RequestHash: "h", Command: order.Command{ID: id, Kind: order.KindCheckout}, Published: true}
	if err := s.ReleaseIdempotency(ctx, id, first, rec); err != nil {
		t.Fatal(err)
	}
	second, err := s.ClaimIdempotency(ctx, id, 50*time.Millisecond)
	if err != nil || !second.Held {
		t.Fatalf("the lock was not released: %+v, %v", second, err)
	}
	if diff := cmp.Diff(rec, second.Record); diff != "" {
		t.Errorf("record read with the claim (-want +got):\n%s", diff)
	}
	// An expired holder cannot release the next holder's lock.
	time.Sleep(100 * time.Millisecond)
	third, _ := s.ClaimIdempotency(ctx, id, time.Minute)
	if !third.Held {
		t.Fatal("the lock did not expire")
	}
	if err := s.ReleaseIdempotency(ctx, id, second, nil); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.ClaimIdempotency(ctx, id, time.Minute); c.Held {
		t.Error("a stale holder released the current holder's lock")
	}
	// Releasing a claim not held is a no-op.
	if err := s.ReleaseIdempotency(ctx, id, redisstore.Claim{}, nil); err != nil {
		t.Error(err)
	}
}

func TestQueuePosition(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	const p = 3
	var line []*order.Order
	for i := range 5 {
		o := pendingOrder(fmt.Sprintf("u%d", i), time.Now())
		if wrote, err := s.PutPending(ctx, o, nil, p); err != nil || !wrote {
			t.Fatalf("PutPending: %v %v", wrote, err)
		}
		line = append(line, o)
	}
	ticketOf := func(o *order.Order) redisstore.Ticket {
		t.Helper()
		_, tk, err := s.OrderInLine(ctx, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	for i, o := range line {
		if tk := ticketOf(o); tk.Partition != p || tk.N != int64(i+1) {
			t.Errorf("order %d: ticket %+v, want partition %d number %d", i, tk, p, i+1)
		}
	}
	// The partition applied two checkouts; the first publish of the rest
	// failed: three served.
	if err := s.ApplyPartition(ctx, p, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DropPending(ctx, line[2], p); err != nil {
		t.Fatal(err)
	}
	done, err := s.QueueDone(ctx, p+1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{0, 0, 0, 3}; !slices.Equal(done, want) {
		t.Errorf("done %v, want %v", done, want)
	}
	// A state cached before the pending one: no ticket.
	late := pendingOrder("u9", time.Now())
	decided := *late
	decided.Status = order.StatusRejected
	if err := s.PutOrders(ctx, &decided); err != nil {
		t.Fatal(err)
	}
	if wrote, _ := s.PutPending(ctx, late, nil, p); wrote {
		t.Error("PutPending wrote over a decision")
	}
	if tk := ticketOf(late); tk != (redisstore.Ticket{}) {
		t.Errorf("decided order has ticket %+v", tk)
	}
}

// TestClaimIdempotencyConcurrent: of many requests with one key whose
// commands share pipelines, exactly one holds it; every pending order of
// many concurrent ones gets its own ticket.
func TestClaimIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	id := uuid.New()
	var held atomic.Int64
	var wg sync.WaitGroup
	tickets := make([]int64, 100)
	for i := range 100 {
		wg.Go(func() {
			c, err := s.ClaimIdempotency(ctx, id, time.Minute)
			if err != nil {
				t.Error(err)
			}
			if c.Held {
				held.Add(1)
			}
			o := pendingOrder(fmt.Sprintf("c%d", i), time.Now())
			if _, err := s.PutPending(ctx, o, nil, 0); err != nil {
				t.Error(err)
				return
			}
			_, tk, err := s.OrderInLine(ctx, o.ID)
			if err != nil {
				t.Error(err)
			}
			tickets[i] = tk.N
		})
	}
	wg.Wait()
	if held.Load() != 1 {
		t.Errorf("%d holders of one key, want 1", held.Load())
	}
	slices.Sort(tickets)
	for i, n := range tickets {
		if n != int64(i+1) {
			t.Fatalf("tickets %v: want 1..100 once each", tickets)
		}
	}
}

// TestDropPendingKeepsDecision: a checkout whose publish timed out drops
// its pending order, but JetStream may have stored the command and a worker
// decided it meanwhile. The drop must leave that decision cached: had it
// deleted it, the buyer's retry with the same Idempotency-Key would cache
// pending again (PutPending writes only where nothing is cached) and
// republish a command that JetStream drops as a duplicate, so that no
// worker would ever cache the decision again, and every reader of the
// cache would see pending for a day (found by make chaos).
func TestDropPendingKeepsDecision(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	o := pendingOrder("u1", time.Now())
	if wrote, err := s.PutPending(ctx, o, nil, 3); err != nil || !wrote {
		t.Fatalf("PutPending: %v, %v", wrote, err)
	}
	decided := *o
	decided.Status = order.StatusConfirmed
	if err := s.PutOrders(ctx, &decided); err != nil {
		t.Fatal(err)
	}
	if err := s.DropPending(ctx, o, 3); err != nil {
		t.Fatal(err)
	}
	got, err := s.OrderStatus(ctx, o.ID)
	if err != nil {
		t.Fatalf("the decision is gone after the drop: %v", err)
	}
	if got.Status != order.StatusConfirmed {
		t.Errorf("cached status %s after the drop, want confirmed", got.Status)
	}
	// The buyer's retry: nothing overwrites the decision.
	if wrote, err := s.PutPending(ctx, o, nil, 3); err != nil || wrote {
		t.Errorf("PutPending after the drop: %v, %v; want false", wrote, err)
	}
	if got, _ := s.OrderStatus(ctx, o.ID); got.Status != order.StatusConfirmed {
		t.Errorf("cached status %s after the retry, want confirmed", got.Status)
	}
}
