package order

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func ptr[T any](v T) *T { return &v }

func newLedger(skus ...*SKU) *Ledger {
	l := &Ledger{SKUs: map[uuid.UUID]*SKU{}, Held: map[UserSKU]int64{}, Now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	for _, s := range skus {
		l.SKUs[s.ID] = s
	}
	return l
}

func sku(stock int64) *SKU {
	return &SKU{ID: uuid.New(), Name: "hot", Price: 1999, Currency: "EUR", Stock: stock, InitialStock: stock}
}

// With stock S and N > S buyers of one unit, exactly S are served, the stock
// ends at 0, and nobody is turned away while a unit is left.
func TestLedgerHotSKUIsFair(t *testing.T) {
	s := sku(100)
	l := newLedger(s)
	confirmed := 0
	for i := 0; i < 1000; i++ {
		before := s.Stock
		d := l.Take(uuid.NewString(), []LineRequest{{SKUID: s.ID, Quantity: 1}})
		switch {
		case d.OK():
			confirmed++
		case d.Reason != RejectOutOfStock:
			t.Fatalf("buyer %d rejected %s", i, d.Reason)
		case before > 0:
			t.Fatalf("buyer %d rejected out_of_stock with %d left", i, before)
		}
	}
	if confirmed != 100 || s.Stock != 0 || s.UnitsSold != 100 {
		t.Errorf("confirmed %d, stock %d, sold %d; want 100, 0, 100", confirmed, s.Stock, s.UnitsSold)
	}
}

func TestLedgerTakeReasons(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	missing := uuid.New()
	tests := []struct {
		name   string
		sku    *SKU
		held   int64
		qty    int64
		extra  []LineRequest
		reason RejectReason
	}{
		{name: "ok", sku: sku(5), qty: 5},
		{name: "out of stock", sku: sku(4), qty: 5, reason: RejectOutOfStock},
		{name: "paused", sku: &SKU{ID: uuid.New(), Currency: "EUR", Stock: 9, Paused: true}, qty: 1, reason: RejectSalePaused},
		{name: "not open yet", sku: &SKU{ID: uuid.New(), Currency: "EUR", Stock: 9, SaleStartsAt: ptr(now.Add(time.Minute))}, qty: 1, reason: RejectSaleNotOpen},
		{name: "closed", sku: &SKU{ID: uuid.New(), Currency: "EUR", Stock: 9, SaleEndsAt: ptr(now)}, qty: 1, reason: RejectSaleNotOpen},
		{name: "limit", sku: &SKU{ID: uuid.New(), Currency: "EUR", Stock: 9, PerUserLimit: ptr(int64(2))}, held: 1, qty: 2, reason: RejectLimitExceeded},
		{name: "limit reached exactly", sku: &SKU{ID: uuid.New(), Currency: "EUR", Stock: 9, PerUserLimit: ptr(int64(2))}, held: 1, qty: 1},
		{name: "unknown sku", sku: sku(5), qty: 1, extra: []LineRequest{{SKUID: missing, Quantity: 1}}, reason: RejectSKUNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLedger(tt.sku)
			l.Held[UserSKU{"u1", tt.sku.ID}] = tt.held
			before := *tt.sku
			d := l.Take("u1", append([]LineRequest{{SKUID: tt.sku.ID, Quantity: tt.qty}}, tt.extra...))
			if d.Reason != tt.reason {
				t.Fatalf("reason %q, want %q", d.Reason, tt.reason)
			}
			if !d.OK() && *tt.sku != before {
				t.Errorf("a rejected order changed the SKU: %s", cmp.Diff(before, *tt.sku))
			}
			if d.Reason == RejectSKUNotFound && !cmp.Equal(d.SKUs, []uuid.UUID{missing}) {
				t.Errorf("named %v, want the missing SKU", d.SKUs)
			}
		})
	}
}

// An order is all or nothing: one short line leaves every SKU untouched,
// and the rejection names only the short SKUs.
func TestLedgerAllOrNothing(t *testing.T) {
	a, b, c := sku(10), sku(1), sku(0)
	l := newLedger(a, b, c)
	d := l.Take("u", []LineRequest{{a.ID, 2}, {b.ID, 2}, {c.ID, 1}})
	if d.Reason != RejectOutOfStock || !cmp.Equal(d.SKUs, []uuid.UUID{b.ID, c.ID}) {
		t.Fatalf("got %s %v, want out_of_stock naming b and c", d.Reason, d.SKUs)
	}
	if a.Stock != 10 || b.Stock != 1 || c.Stock != 0 {
		t.Errorf("stock changed: %d %d %d", a.Stock, b.Stock, c.Stock)
	}
}

func TestLedgerReleaseAndRestock(t *testing.T) {
	s := sku(3)
	s.PerUserLimit = ptr(int64(3))
	l := newLedger(s)
	d := l.Take("u", []LineRequest{{s.ID, 3}})
	if !d.OK() || s.Stock != 0 {
		t.Fatalf("take: %+v stock %d", d, s.Stock)
	}
	want := []Line{{SKUID: s.ID, Name: "hot", Quantity: 3, UnitPrice: 1999, LineTotal: 5997}}
	if diff := cmp.Diff(want, d.Lines); diff != "" {
		t.Errorf("priced lines (-want +got):\n%s", diff)
	}
	l.Release("u", d.Lines)
	if s.Stock != 3 || s.UnitsSold != 0 || l.Held[UserSKU{"u", s.ID}] != 0 {
		t.Errorf("after release: stock %d sold %d held %d", s.Stock, s.UnitsSold, l.Held[UserSKU{"u", s.ID}])
	}
	if !l.Restock(s.ID, 7) || s.Stock != 10 || s.Restocked != 7 {
		t.Errorf("after restock: stock %d restocked %d", s.Stock, s.Restocked)
	}
	if l.Restock(uuid.New(), 1) {
		t.Error("restock of an unknown SKU succeeded")
	}
}

func TestPartitionIsStable(t *testing.T) {
	id := uuid.MustParse("0b7c1f3e-2f7a-4c61-9a57-0d5f0c6a1e42")
	if got := Partition(id, 16); got != Partition(id, 16) || got < 0 || got >= 16 {
		t.Fatalf("partition %d", got)
	}
	counts := make([]int, 8)
	for i := 0; i < 8000; i++ {
		counts[Partition(uuid.New(), 8)]++
	}
	for p, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("partition %d got %d of 8000 SKUs: the hash spreads badly", p, n)
		}
	}
}

func TestOrderNumbersAreUniquePerSequence(t *testing.T) {
	at := time.Date(2026, 11, 26, 23, 59, 59, 0, time.UTC)
	if got, want := NumberFor(at, 1234), "FS-20261126-000001234"; got != want {
		t.Errorf("NumberFor = %q, want %q", got, want)
	}
	if NumberFor(at, 1) == NumberFor(at, 2) {
		t.Error("two sequence values gave one number")
	}
	a, again := IdempotentID("u1", "k"), IdempotentID("u1", "k")
	if a != again || a == IdempotentID("u2", "k") || a == IdempotentID("u1", "k2") {
		t.Error("IdempotentID is not a function of user and key")
	}
}
