package postgres_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func TestQuotedPriceSurvivesAPriceChange(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(1, 5)
	quoted := e.checkout("u1", sku, 2)
	quoted.Checkout.Prices = map[uuid.UUID]int64{sku: 1000}
	unquoted := e.checkout("u2", sku, 1)
	// The price changes after the ingress accepted both, before the
	// partition decides them.
	if _, err := e.db.UpdateSKU(ctx, sku, "admin", func(s *order.SKU) error { s.Price = 5000; return nil }); err != nil {
		t.Fatal(err)
	}
	e.apply(quoted, unquoted)
	for _, tc := range []struct {
		id    uuid.UUID
		price int64
	}{{quoted.Checkout.OrderID, 1000}, {unquoted.Checkout.OrderID, 5000}} {
		o, err := e.db.Order(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if o.Status != order.StatusConfirmed || o.Lines[0].UnitPrice != tc.price || o.Subtotal != tc.price*o.Lines[0].Quantity {
			t.Errorf("order %s: %s, unit price %d subtotal %d, want %d", tc.id, o.Status, o.Lines[0].UnitPrice, o.Subtotal, tc.price)
		}
	}
}

func TestQuotedPriceMultiPartition(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	skus := [3]uuid.UUID{e.sku(0, 5), e.sku(1, 5), e.sku(2, 5)}
	c := e.multi("u1", skus, 1)
	c.Checkout.Prices = map[uuid.UUID]int64{skus[0]: 1000, skus[1]: 1000, skus[2]: 1000}
	for _, s := range skus {
		if _, err := e.db.UpdateSKU(ctx, s, "admin", func(s *order.SKU) error { s.Price = 7000; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	e.apply(c)
	e.deliver()
	o, err := e.db.Order(ctx, c.Checkout.OrderID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusConfirmed || o.Subtotal != 3000 {
		t.Errorf("order %s subtotal %d, want confirmed at 3000", o.Status, o.Subtotal)
	}
}

func TestPausedSKURejectsQueuedCheckouts(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(2, 5)
	queued := e.checkout("u1", sku, 1)
	s, err := e.db.SetSKUPaused(ctx, sku, true, "admin")
	if err != nil || !s.Paused {
		t.Fatalf("pause: %+v %v", s, err)
	}
	if _, err := e.db.SetSKUPaused(ctx, sku, true, "admin"); err != nil {
		t.Fatal(err)
	}
	e.apply(queued)
	if st, reason := e.status(queued.Checkout.OrderID); st != order.StatusRejected || reason != order.RejectSalePaused {
		t.Errorf("queued checkout %s %s, want rejected sale_paused", st, reason)
	}
	if _, err := e.db.SetSKUPaused(ctx, sku, false, "admin"); err != nil {
		t.Fatal(err)
	}
	later := e.checkout("u1", sku, 1)
	e.apply(later)
	if st, _ := e.status(later.Checkout.OrderID); st != order.StatusConfirmed {
		t.Errorf("after resume: %s", st)
	}
	entries, err := e.db.SKUAudit(ctx, sku)
	if err != nil {
		t.Fatal(err)
	}
	// Pausing twice is one change.
	if len(entries) != 2 || entries[0].Action != order.AuditResume || entries[1].Action != order.AuditPause || entries[1].Actor != "admin" {
		t.Errorf("audit %+v, want resume then pause", entries)
	}
}

func TestUpdateSKUValidatesAndAudits(t *testing.T) {
	e := ptNew(t)
	ctx := context.Background()
	sku := e.sku(0, 5)
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	_, err := e.db.UpdateSKU(ctx, sku, "root", func(s *order.SKU) error {
		s.SaleStartsAt = &start
		end := start.Add(-time.Minute)
		s.SaleEndsAt = &end
		return nil
	})
	if order.ErrorCode(err) != order.EINVALID {
		t.Fatalf("an end before the start: %v", err)
	}
	if entries, _ := e.db.SKUAudit(ctx, sku); len(entries) != 0 {
		t.Errorf("a refused change was audited: %+v", entries)
	}
	got, err := e.db.UpdateSKU(ctx, sku, "root", func(s *order.SKU) error {
		s.Name, s.Price, s.SaleStartsAt = "renamed", 1234, &start
		return nil
	})
	if err != nil || got.Name != "renamed" || got.Price != 1234 || got.SaleStartsAt == nil || !got.SaleStartsAt.Equal(start) || got.Stock != 5 {
		t.Fatalf("update: %+v %v", got, err)
	}
	entries, err := e.db.SKUAudit(ctx, sku)
	if err != nil || len(entries) != 1 {
		t.Fatalf("audit %+v %v", entries, err)
	}
	var before, after order.SKU
	if err := json.Unmarshal(entries[0].Before, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(entries[0].After, &after); err != nil {
		t.Fatal(err)
	}
	if before.Price != 1000 || after.Price != 1234 || entries[0].Actor != "root" || entries[0].Action != order.AuditUpdate {
		t.Errorf("audit entry %+v: before %+v after %+v", entries[0], before, after)
	}
	if _, err := e.db.UpdateSKU(ctx, uuid.New(), "root", func(*order.SKU) error { return nil }); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("unknown SKU: %v", err)
	}
	if _, err := e.db.SKUAudit(ctx, uuid.New()); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("audit of an unknown SKU: %v", err)
	}
}
