package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// fixtureSeq numbers the fixture's orders.
var fixtureSeq atomic.Int64

// orderFixture inserts what orders refer to: a SKU and an address of user.
type orderFixture struct {
	db      *postgres.DB
	skuID   uuid.UUID
	skuName string
	addrs   map[string]uuid.UUID
}

func newOrderFixture(t *testing.T, db *postgres.DB) *orderFixture {
	t.Helper()
	f := &orderFixture{db: db, skuID: uuid.New(), skuName: "Hot sneaker", addrs: map[string]uuid.UUID{}}
	if _, err := db.Exec(`INSERT INTO skus (id, name, price, currency, stock, initial_stock) VALUES ($1, $2, 1500, 'EUR', 100, 100)`, f.skuID, f.skuName); err != nil {
		t.Fatal(err)
	}
	return f
}

// insertOrder writes an order of user with one line of the fixture's SKU,
// as a partition would.
func (f *orderFixture) insertOrder(t *testing.T, user string, at time.Time, status order.Status, key, hash string) *order.Order {
	t.Helper()
	addr, ok := f.addrs[user]
	if !ok {
		addr = uuid.New()
		if _, err := f.db.Exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country) VALUES ($1, $2, 'R', 'L1', 'Berlin', '10115', 'DE')`, addr, user); err != nil {
			t.Fatal(err)
		}
		f.addrs[user] = addr
	}
	id := uuid.New()
	if key != "" {
		id = order.IdempotentID(user, key)
	}
	o := &order.Order{
		ID: id, Number: order.NumberFor(at, fixtureSeq.Add(1)), UserID: user, AddressID: addr,
		PaymentMethod: order.PayCard, Status: status, Currency: "EUR",
		Lines:       []order.Line{{SKUID: f.skuID, Name: f.skuName, Quantity: 2, UnitPrice: 1500, LineTotal: 3000}},
		ShippingFee: 1000, AcceptedAt: at.UTC().Truncate(time.Microsecond), UpdatedAt: at.UTC().Truncate(time.Microsecond),
	}
	o.Price()
	var reason *string
	if status == order.StatusRejected {
		r := string(order.RejectOutOfStock)
		reason = &r
		o.RejectReason = order.RejectOutOfStock
		o.RejectSKUs = []uuid.UUID{f.skuID}
	}
	var skus any
	if o.RejectSKUs != nil {
		skus = "{" + f.skuID.String() + "}"
	}
	var nkey, nhash *string
	if key != "" {
		nkey, nhash = &key, &hash
	}
	_, err := f.db.Exec(`INSERT INTO orders (id, order_number, user_id, address_id, payment_method, status, reject_reason, reject_skus,
		currency, subtotal, shipping_fee, grand_total, home_partition, idempotency_key, request_hash, accepted_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14, $15, $16)`,
		o.ID, o.Number, user, addr, o.PaymentMethod, o.Status, reason, skus, o.Currency, o.Subtotal, o.ShippingFee, o.GrandTotal,
		nkey, nhash, o.AcceptedAt, o.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`INSERT INTO order_lines (order_id, line_no, sku_id, quantity, unit_price, line_total) VALUES ($1, 0, $2, 2, 1500, 3000)`, o.ID, f.skuID); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOrder(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	f := newOrderFixture(t, db)
	ctx := context.Background()
	now := time.Now()
	for _, st := range []order.Status{order.StatusConfirmed, order.StatusRejected} {
		want := f.insertOrder(t, "u1", now, st, "", "")
		got, err := db.Order(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Order(%s) (-want +got):\n%s", st, diff)
		}
	}
	if _, err := db.Order(ctx, uuid.New()); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("unknown order: err %v, want ENOTFOUND", err)
	}
}

func TestCheckoutFacts(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	f := newOrderFixture(t, db)
	ctx := context.Background()
	want := f.insertOrder(t, "u1", time.Now(), order.StatusConfirmed, "key-1", "hash-1")
	addr := f.addrs["u1"]
	got, err := db.CheckoutFacts(ctx, "u1", addr, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.AddressOK || got.Prior == nil || got.Prior.ID != want.ID || got.Prior.Number != want.Number || got.PriorHash != "hash-1" {
		t.Errorf("got %+v (prior %+v), want the address ok and order %s %s with hash-1", got, got.Prior, want.ID, want.Number)
	}
	for _, c := range []struct {
		user, key string
		addr      uuid.UUID
		addrOK    bool
	}{
		{"u2", "key-1", addr, false},       // another user's key and address
		{"u1", "key-2", addr, true},        // a new key
		{"u1", "", addr, true},             // no key
		{"u1", "key-2", uuid.New(), false}, // an unknown address
	} {
		got, err := db.CheckoutFacts(ctx, c.user, c.addr, c.key)
		if err != nil || got.Prior != nil || got.AddressOK != c.addrOK {
			t.Errorf("user %s key %q: got %+v %v, want no prior order and address ok %v", c.user, c.key, got, err, c.addrOK)
		}
	}
	if _, err := db.Exec(`UPDATE addresses SET deleted_at = now() WHERE id = $1`, addr); err != nil {
		t.Fatal(err)
	}
	if got, err := db.CheckoutFacts(ctx, "u1", addr, "key-2"); err != nil || got.AddressOK {
		t.Errorf("deleted address: got %+v %v, want not ok", got, err)
	}
}

func TestOrdersByUser(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	f := newOrderFixture(t, db)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	var want []uuid.UUID // u1's orders
	for i := range 7 {
		// Two orders share each instant: the id breaks the tie.
		at := base.Add(time.Duration(i/2) * time.Second)
		o := f.insertOrder(t, "u1", at, order.StatusConfirmed, "", "")
		want = append(want, o.ID)
		f.insertOrder(t, "u2", at, order.StatusConfirmed, "", "")
	}
	// Newest first: by accepted_at, then id, descending.
	all, _, err := db.OrdersByUser(ctx, "u1", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 7 {
		t.Fatalf("got %d orders, want 7", len(all))
	}
	mine := make(map[uuid.UUID]bool, len(want))
	for _, id := range want {
		mine[id] = true
	}
	for _, o := range all {
		if !mine[o.ID] {
			t.Errorf("order %s is not one of u1's", o.ID)
		}
	}
	for i := 1; i < len(all); i++ {
		if !order.CursorOf(&all[i-1]).Before(&all[i]) {
			t.Errorf("order %d (%s %s) is not older than order %d", i, all[i].AcceptedAt, all[i].ID, i-1)
		}
	}
	for _, o := range all {
		if o.UserID != "u1" || len(o.Lines) != 1 || o.Lines[0].Name != f.skuName {
			t.Errorf("order %+v: want u1's with its one named line", o)
		}
	}
	for _, limit := range []int{1, 2, 3, 7} {
		var got []uuid.UUID
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatalf("limit %d: too many pages", limit)
			}
			page, next, err := db.OrdersByUser(ctx, "u1", cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page))
			}
			for _, o := range page {
				got = append(got, o.ID)
			}
			if next == "" {
				break
			}
			cursor = next
		}
		wantIDs := make([]uuid.UUID, len(all))
		for i, o := range all {
			wantIDs[i] = o.ID
		}
		if diff := cmp.Diff(wantIDs, got); diff != "" {
			t.Errorf("limit %d: pages (-want +got):\n%s", limit, diff)
		}
	}
	if _, _, err := db.OrdersByUser(ctx, "u1", "not-a-cursor", 10); order.ErrorCode(err) != order.EINVALID {
		t.Errorf("bad cursor: err %v, want EINVALID", err)
	}
	none, next, err := db.OrdersByUser(ctx, "nobody", "", 10)
	if err != nil || len(none) != 0 || next != "" {
		t.Errorf("user without orders: %v %q %v, want an empty last page", none, next, err)
	}
}

func TestNextOrderSeqUniqueAcrossAllocators(t *testing.T) {
	t.Parallel()
	dsn, db := pgtest.New(t)
	ctx := context.Background()
	// Two allocators on two pools: two ingress processes.
	other, err := postgres.Open(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	allocators := []*postgres.OrderNumbers{postgres.NewOrderNumbers(db), postgres.NewOrderNumbers(other)}
	const perAllocator, workers = 5000, 8
	var (
		mu   sync.Mutex
		seen = make(map[int64]int, 2*perAllocator)
		wg   sync.WaitGroup
	)
	for a, alloc := range allocators {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := perAllocator / workers
				if w == 0 {
					n += perAllocator % workers
				}
				got := make([]int64, 0, n)
				for range n {
					v, err := alloc.NextOrderSeq(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					got = append(got, v)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, v := range got {
					if prev, dup := seen[v]; dup {
						t.Errorf("value %d handed out by allocator %d and %d", v, prev, a)
					}
					seen[v] = a
				}
			}()
		}
	}
	wg.Wait()
	if len(seen) != 2*perAllocator {
		t.Errorf("got %d distinct values, want %d", len(seen), 2*perAllocator)
	}
	// Blocks of 1000: 10000 values need at most 12 nextval calls (each
	// allocator may leave a partial block).
	var last int64
	if err := db.Get(&last, `SELECT last_value FROM order_number_seq`); err != nil {
		t.Fatal(err)
	}
	if last > 1000*12 {
		t.Errorf("sequence at %d: more round trips than one per block of 1000", last)
	}
	// A restart (a new allocator) never repeats a value.
	v, err := postgres.NewOrderNumbers(db).NextOrderSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, dup := seen[v]; dup {
		t.Errorf("a new allocator repeated %d", v)
	}
}

func TestNextOrderSeqHonoursContext(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := postgres.NewOrderNumbers(db).NextOrderSeq(ctx); err == nil {
		t.Error("NextOrderSeq with a cancelled context: no error")
	}
}

func TestDBNextOrderSeq(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	// The *DB itself is a NumberSource: one block serves many calls.
	seen := map[int64]bool{}
	for range 1500 {
		v, err := db.NextOrderSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[v] {
			t.Fatalf("value %d twice", v)
		}
		seen[v] = true
	}
	var last int64
	if err := db.Get(&last, `SELECT last_value FROM order_number_seq`); err != nil {
		t.Fatal(err)
	}
	if last != 2000 {
		t.Errorf("sequence at %d after 1500 values, want 2000 (two blocks)", last)
	}
}

func TestCheckoutFactsWithoutStoredKey(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	f := newOrderFixture(t, db)
	want := f.insertOrder(t, "u1", time.Now(), order.StatusConfirmed, "key-1", "hash-1")
	if _, err := db.Exec(`UPDATE orders SET idempotency_key = NULL, request_hash = NULL WHERE id = $1`, want.ID); err != nil {
		t.Fatal(err)
	}
	got, err := db.CheckoutFacts(context.Background(), "u1", f.addrs["u1"], "key-1")
	if err != nil || got.Prior == nil || got.Prior.ID != want.ID || got.PriorHash != "" {
		t.Errorf("got %+v %v, want the order found by its derived id, without a hash", got, err)
	}
}

// TestCheckoutFactsConcurrent: calls answered together in one query each
// get their own answer.
func TestCheckoutFactsConcurrent(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	f := newOrderFixture(t, db)
	placed := map[string]*order.Order{}
	for i := range 10 {
		user := fmt.Sprintf("u%d", i)
		placed[user] = f.insertOrder(t, user, time.Now(), order.StatusConfirmed, "key", "hash-"+user)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", i%10)
			addr, key := f.addrs[user], "key"
			if i%3 == 1 {
				addr = f.addrs[fmt.Sprintf("u%d", (i+1)%10)] // another user's address
			}
			if i%2 == 1 {
				key = fmt.Sprintf("new-%d", i)
			}
			got, err := db.CheckoutFacts(context.Background(), user, addr, key)
			if err != nil {
				t.Error(err)
				return
			}
			if got.AddressOK != (i%3 != 1) {
				t.Errorf("call %d: address ok %v", i, got.AddressOK)
			}
			switch {
			case key == "key" && (got.Prior == nil || got.Prior.ID != placed[user].ID || got.PriorHash != "hash-"+user):
				t.Errorf("call %d (%s): prior %+v hash %q, want %s", i, user, got.Prior, got.PriorHash, placed[user].ID)
			case key != "key" && got.Prior != nil:
				t.Errorf("call %d: a new key found order %s", i, got.Prior.ID)
			}
		})
	}
	wg.Wait()
}
