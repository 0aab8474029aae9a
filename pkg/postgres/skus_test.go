package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

func ptr[T any](v T) *T { return &v }

func TestCreateSKU(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	starts := time.Date(2026, 12, 1, 9, 0, 0, 123456789, time.FixedZone("", 23*3600+59*60))
	n := &order.NewSKU{Name: "Phone", Price: ptr(int64(49900)), Currency: "EUR", Stock: ptr(int64(7)),
		PerUserLimit: ptr(int64(2)), SaleStartsAt: &starts, PaymentHoldSeconds: ptr(int64(60))}
	s, err := db.CreateSKU(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID == uuid.Nil || s.InitialStock != 7 || s.Stock != 7 || s.UnitsSold != 0 || s.Restocked != 0 || s.Paused {
		t.Errorf("created %+v", s)
	}
	// The instant survives an offset PostgreSQL refuses, at microseconds.
	if want := starts.Truncate(time.Microsecond); s.SaleStartsAt == nil || !s.SaleStartsAt.Equal(want) {
		t.Errorf("sale_starts_at %v, want %v", s.SaleStartsAt, want)
	}
	got, err := db.SKU(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("SKU (-created +read):\n%s", diff)
	}
}

func TestCreateSKUInvalid(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	for name, n := range map[string]*order.NewSKU{
		"no price":    {Name: "a", Currency: "EUR", Stock: ptr(int64(1))},
		"no stock":    {Name: "a", Currency: "EUR", Price: ptr(int64(1))},
		"NUL in name": {Name: "a\x00", Currency: "EUR", Price: ptr(int64(1)), Stock: ptr(int64(1))},
	} {
		if _, err := db.CreateSKU(ctx, n); order.ErrorCode(err) != order.EINVALID {
			t.Errorf("%s: error %v, want EINVALID", name, err)
		}
	}
	var count int
	if err := db.Get(&count, `SELECT count(*) FROM skus`); err != nil || count != 0 {
		t.Errorf("%d SKUs stored (%v), want none", count, err)
	}
}

func TestSKUNotFound(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	if _, err := db.SKU(context.Background(), uuid.New()); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("error %v, want ENOTFOUND", err)
	}
}

func TestSKUsByID(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	var ids []uuid.UUID
	for i := range 3 {
		s, err := db.CreateSKU(ctx, &order.NewSKU{Name: fmt.Sprint("SKU ", i), Price: ptr(int64(i)), Currency: "EUR", Stock: ptr(int64(1))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	missing := uuid.New()
	got, err := db.SKUsByID(ctx, []uuid.UUID{ids[2], missing, ids[0], ids[0]})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[ids[2]] == nil || got[ids[0]] == nil || got[ids[0]].ID != ids[0] || got[missing] != nil {
		t.Errorf("SKUsByID: %v", got)
	}
	if got, err := db.SKUsByID(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("no ids: %v, %v", got, err)
	}
}

func TestListSKUs(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	var ids []uuid.UUID
	for i := range 5 {
		s, err := db.CreateSKU(ctx, &order.NewSKU{Name: fmt.Sprint("SKU ", i), Price: ptr(int64(1)), Currency: "EUR", Stock: ptr(int64(1))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	// PostgreSQL orders uuids as Go orders their strings.
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	var got []uuid.UUID
	after := uuid.Nil
	for {
		page, err := db.ListSKUs(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, s := range page {
			got = append(got, s.ID)
		}
		after = page[len(page)-1].ID
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
	if page, err := db.ListSKUs(ctx, uuid.Max, 10); err != nil || page == nil || len(page) != 0 {
		t.Errorf("after the last: %v, %v; want an empty, non-nil page", page, err)
	}
}
