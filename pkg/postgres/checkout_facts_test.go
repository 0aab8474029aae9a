package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
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
