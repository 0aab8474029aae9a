package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
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
		wrote, err := s.PutPending(ctx, c.o, c.rec)
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
	if wrote, err := s.PutPending(ctx, o1, nil); err != nil || wrote {
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
	if err := s.DropPending(ctx, o2); err != nil {
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

func TestLockIdempotency(t *testing.T) {
	t.Parallel()
	s, _ := redistest.New(t)
	ctx := context.Background()
	id := uuid.New()
	unlock, ok, err := s.LockIdempotency(ctx, id, time.Minute)
	if err != nil || !ok {
		t.Fatalf("first lock: %v, %v", ok, err)
	}
	if _, ok, _ := s.LockIdempotency(ctx, id, time.Minute); ok {
		t.Error("a second holder got the lock")
	}
	if _, ok, _ := s.LockIdempotency(ctx, uuid.New(), time.Minute); !ok {
		t.Error("another key's lock is taken")
	}
	unlock()
	unlock2, ok, _ := s.LockIdempotency(ctx, id, 50*time.Millisecond)
	if !ok {
		t.Fatal("the lock was not released")
	}
	// An expired holder cannot release the next holder's lock.
	time.Sleep(100 * time.Millisecond)
	_, ok, _ = s.LockIdempotency(ctx, id, time.Minute)
	if !ok {
		t.Fatal("the lock did not expire")
	}
	unlock2()
	if _, ok, _ := s.LockIdempotency(ctx, id, time.Minute); ok {
		t.Error("a stale holder released the current holder's lock")
	}
}
