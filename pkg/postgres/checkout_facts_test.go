package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// TestAbandonCommand: a command settled as abandoned before any partition
// applied it is never applied (its order never exists, its stock is never
// taken), whenever its message arrives; one a partition applied first is
// reported applied.
func TestAbandonCommand(t *testing.T) {
	t.Parallel()
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(0, 5)

	late := e.checkout("u1", sku, 1)
	for range 2 {
		applied, err := e.db.AbandonCommand(ctx, late.ID, late.Partition)
		if err != nil || applied {
			t.Fatalf("abandon a command no partition saw: applied %v, %v; want false", applied, err)
		}
	}
	e.apply(late) // its message arrives after all
	if n := e.count(`SELECT count(*) FROM orders WHERE id = $1`, late.Checkout.OrderID); n != 0 {
		t.Errorf("an abandoned checkout became an order")
	}
	if got := e.stock(sku); got != (ptStock{Stock: 5}) {
		t.Errorf("stock %+v after an abandoned checkout, want 5 and none sold", got)
	}

	done := e.checkout("u2", sku, 1)
	e.apply(done)
	applied, err := e.db.AbandonCommand(ctx, done.ID, done.Partition)
	if err != nil || !applied {
		t.Errorf("abandon an applied command: applied %v, %v; want true", applied, err)
	}
	if st, _ := e.status(done.Checkout.OrderID); st != "confirmed" {
		t.Errorf("the applied order is %s, want still confirmed", st)
	}
}

// TestAbandonCommandMeetsAPartition: a partition's transaction that applies
// the command is in flight when it is abandoned: the abandon waits for it
// and reports what it did, applied if it commits, abandoned if it rolls
// back.
func TestAbandonCommandMeetsAPartition(t *testing.T) {
	t.Parallel()
	e := ptNew(t)
	ctx := context.Background()
	for _, commit := range []bool{true, false} {
		id := uuid.New()
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		// What ApplyBatch writes for a command it applied, not committed yet.
		if _, err := tx.Exec(`INSERT INTO processed_commands (id, kind, partition) VALUES ($1, 'checkout', 0)`, id); err != nil {
			t.Fatal(err)
		}
		type result struct {
			applied bool
			err     error
		}
		done := make(chan result, 1)
		go func() {
			applied, err := e.db.AbandonCommand(ctx, id, 0)
			done <- result{applied, err}
		}()
		select {
		case r := <-done:
			t.Fatalf("abandon returned %+v while the partition's transaction was open", r)
		case <-time.After(200 * time.Millisecond):
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.err != nil || r.applied != commit {
			t.Errorf("partition commits %v: abandon answered applied %v (%v), want %v", commit, r.applied, r.err, commit)
		}
	}
}

// TestAbandonRejectionRecord: the record of an order the ingress rejected
// itself is settled the same way: abandoned first, it is never written;
// written first, the abandon reports it applied.
func TestAbandonRejectionRecord(t *testing.T) {
	t.Parallel()
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(2, 0)

	late := rejection(e.checkout("u1", sku, 1), sku)
	if applied, err := e.db.AbandonCommand(ctx, late.ID, late.Partition); err != nil || applied {
		t.Fatalf("abandon a record nobody wrote: applied %v, %v; want false", applied, err)
	}
	res, err := e.db.RecordRejections(ctx, []order.Command{late})
	if err != nil || res.Applied != 0 || len(res.Orders) != 0 {
		t.Errorf("record an abandoned rejection: %+v, %v; want nothing written", res, err)
	}
	if n := e.count(`SELECT count(*) FROM orders WHERE id = $1`, late.Rejection.Checkout.OrderID); n != 0 {
		t.Errorf("an abandoned rejection became an order")
	}

	done := rejection(e.checkout("u2", sku, 1), sku)
	if _, err := e.db.RecordRejections(ctx, []order.Command{done}); err != nil {
		t.Fatal(err)
	}
	if applied, err := e.db.AbandonCommand(ctx, done.ID, done.Partition); err != nil || !applied {
		t.Errorf("abandon a written record: applied %v, %v; want true", applied, err)
	}
}

// TestClaimKey: the first claim of a key is written, a later one gets the
// first back (also when both come in one batch), and CheckoutFacts tells
// of the claim until the order is written.
func TestClaimKey(t *testing.T) {
	t.Parallel()
	e := ptNew(t)
	ctx := context.Background()
	user, key := "u1", "key-1"
	addr := e.address(user)
	id := order.IdempotentID(user, key)
	first := order.KeyClaim{OrderID: id, RequestHash: "hash-a", OrderNumber: "FS-1"}

	facts, err := e.db.CheckoutFacts(ctx, user, addr, key)
	if err != nil || facts.Claim != nil || facts.Prior != nil {
		t.Fatalf("facts of an unused key: %+v, %v", facts, err)
	}
	if prior, err := e.db.ClaimKey(ctx, first); err != nil || prior != nil {
		t.Fatalf("first claim: prior %+v, %v; want none", prior, err)
	}
	prior, err := e.db.ClaimKey(ctx, order.KeyClaim{OrderID: id, RequestHash: "hash-b", OrderNumber: "FS-2"})
	if err != nil || prior == nil || *prior != first {
		t.Errorf("second claim: prior %+v, %v; want %+v", prior, err, first)
	}
	facts, err = e.db.CheckoutFacts(ctx, user, addr, key)
	if err != nil || facts.Claim == nil || *facts.Claim != first || facts.Prior != nil {
		t.Errorf("facts of a claimed key: %+v (claim %+v), %v; want the claim %+v", facts, facts.Claim, err, first)
	}
	if facts, _ := e.db.CheckoutFacts(ctx, user, addr, "other-key"); facts.Claim != nil {
		t.Errorf("another key has the claim %+v", facts.Claim)
	}

	// Once the order is written, it answers for the key.
	c := e.checkout(user, e.sku(0, 5), 1)
	c.Checkout.OrderID, c.Checkout.IdempotencyKey, c.Checkout.RequestHash = id, key, "hash-a"
	e.apply(c)
	if facts, _ := e.db.CheckoutFacts(ctx, user, addr, key); facts.Prior == nil || facts.Claim != nil {
		t.Errorf("facts after the order was written: prior %+v, claim %+v; want the order only", facts.Prior, facts.Claim)
	}

	// Two claims of one key in one statement: the first is written.
	other := order.IdempotentID(user, "key-2")
	a := order.KeyClaim{OrderID: other, RequestHash: "hash-a", OrderNumber: "FS-3"}
	b := order.KeyClaim{OrderID: other, RequestHash: "hash-b", OrderNumber: "FS-4"}
	got, err := e.db.ClaimKeysForTest(ctx, []order.KeyClaim{a, b})
	if err != nil || got[0] != nil || got[1] == nil || *got[1] != a {
		t.Errorf("claims %+v and %+v in one batch: priors %v, %v; want none, then the first", a, b, got, err)
	}
}

// BenchmarkClaimKey measures what a keyed checkout's claim costs when many
// checkouts run at once (batched, as under a sale), next to the facts
// query every checkout already makes.
func BenchmarkClaimKey(b *testing.B) {
	ctx := context.Background()
	_, db := pgtest.New(b)
	b.Run("claim", func(b *testing.B) {
		b.SetParallelism(64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c := order.KeyClaim{OrderID: uuid.New(), RequestHash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", OrderNumber: "FS-20261204-000001000"}
				if _, err := db.ClaimKey(ctx, c); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("facts", func(b *testing.B) {
		b.SetParallelism(64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := db.CheckoutFacts(ctx, "bench", uuid.New(), uuid.NewString()); err != nil {
					b.Error(err)
				}
			}
		})
	})
}
