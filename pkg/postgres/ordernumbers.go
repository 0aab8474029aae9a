package postgres

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"weak"
)

// OrderNumbers hands out values of the order number sequence with the hi/lo
// scheme: each nextval('order_number_seq') reserves a block of as many
// values as the sequence's increment (1000), which the allocator then
// hands out from memory. One PostgreSQL round trip serves a block, values
// are unique across every process sharing the database and across restarts
// (a restart abandons the rest of its block: numbers have gaps, never
// repeats). It is safe for concurrent use.
type OrderNumbers struct {
	db   *DB
	lock chan struct{} // a mutex whose wait honours ctx
	next int64         // the next value to hand out
	end  int64         // the first value past the current block
}

// NewOrderNumbers returns an allocator over db's order_number_seq.
func NewOrderNumbers(db *DB) *OrderNumbers {
	return &OrderNumbers{db: db, lock: make(chan struct{}, 1)}
}

// NextOrderSeq returns a sequence value no other call, in this process or
// any other, returns. It fetches a new block when the current one is used
// up, and returns EUNAVAILABLE if the database is unreachable then, or
// ctx's error if ctx ends while it waits.
func (n *OrderNumbers) NextOrderSeq(ctx context.Context) (int64, error) {
	return n.allocate(ctx, n.db)
}

func (n *OrderNumbers) allocate(ctx context.Context, db *DB) (int64, error) {
	select {
	case n.lock <- struct{}{}:
	case <-ctx.Done():
		return 0, translate(fmt.Errorf("next order number: %w", ctx.Err()))
	}
	defer func() { <-n.lock }()
	if n.next >= n.end {
		var start, size int64
		// The block size is the sequence's own increment, so the blocks of
		// every process tile the number line even if the migration changes.
		err := db.QueryRowContext(ctx, `
			SELECT nextval('order_number_seq'),
			       (SELECT increment_by FROM pg_sequences
			        WHERE schemaname = current_schema() AND sequencename = 'order_number_seq')`).Scan(&start, &size)
		if err != nil {
			return 0, translate(fmt.Errorf("next order number block: %w", err))
		}
		if size < 1 {
			return 0, fmt.Errorf("order_number_seq increments by %d", size)
		}
		n.next, n.end = start, start+size
	}
	v := n.next
	n.next++
	return v, nil
}

// allocators holds the OrderNumbers of each pool that NextOrderSeq was
// called on, without keeping the pool alive.
// Its allocators hold no pool (db is nil): the pool is passed in.
var allocators sync.Map // weak.Pointer[DB] -> *OrderNumbers

// NextOrderSeq hands out order number sequence values from one OrderNumbers
// allocator per pool, created on first use: the ingress's NumberSource when
// it is wired with the *DB itself. See OrderNumbers.NextOrderSeq.
func (db *DB) NextOrderSeq(ctx context.Context) (int64, error) {
	key := weak.Make(db)
	n, ok := allocators.Load(key)
	if !ok {
		var loaded bool
		n, loaded = allocators.LoadOrStore(key, NewOrderNumbers(nil))
		if !loaded {
			runtime.AddCleanup(db, func(k weak.Pointer[DB]) { allocators.Delete(k) }, key)
		}
	}
	return n.(*OrderNumbers).allocate(ctx, db)
}
