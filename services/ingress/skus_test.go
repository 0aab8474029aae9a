package ingress

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func TestCreateSKU(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	starts := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	n := order.NewSKU{
		Name: "Phone X", Price: ptr(int64(49900)), Currency: "EUR", Stock: ptr(int64(100)),
		PerUserLimit: ptr(int64(2)), SaleStartsAt: &starts, SaleEndsAt: ptr(starts.Add(time.Hour)),
		PaymentHoldSeconds: ptr(int64(600)),
	}
	var got order.SKU
	resp := e.mustDo(t, "POST", "/v1/skus", e.adminToken(t), n, http.StatusCreated, &got)
	if loc, want := resp.Header.Get("Location"), "/v1/skus/"+got.ID.String(); loc != want {
		t.Errorf("Location %q, want %q", loc, want)
	}
	want := order.SKU{
		ID: got.ID, Name: "Phone X", Price: 49900, Currency: "EUR", Stock: 100, InitialStock: 100,
		PerUserLimit: ptr(int64(2)), SaleStartsAt: &starts, SaleEndsAt: ptr(starts.Add(time.Hour)),
		PaymentHoldSeconds: ptr(int64(600)), CreatedAt: got.CreatedAt, UpdatedAt: got.UpdatedAt,
	}
	if got.ID == uuid.Nil || got.CreatedAt.IsZero() {
		t.Errorf("no id or created_at: %+v", got)
	}
	if diff := cmp.Diff(want, got, timeEqual); diff != "" {
		t.Errorf("created SKU (-want +got):\n%s", diff)
	}
	var fetched order.SKU
	e.mustDo(t, "GET", "/v1/skus/"+got.ID.String(), e.token(t, "alice"), nil, http.StatusOK, &fetched)
	if diff := cmp.Diff(got, fetched, timeEqual); diff != "" {
		t.Errorf("GET answers another SKU (-created +fetched):\n%s", diff)
	}
}

// timeEqual compares times as instants, whatever their location.
var timeEqual = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

func TestCreateSKUEdgeValues(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cases := map[string]string{
		// Go accepts offsets PostgreSQL refuses; the instant must survive.
		"offset +23:59":   `{"name":"a","price":0,"currency":"USD","stock":0,"sale_starts_at":"2026-01-01T00:00:00+23:59"}`,
		"year 0001":       `{"name":"a","price":1,"currency":"USD","stock":1,"sale_starts_at":"0001-01-01T00:00:00Z"}`,
		"year 9999":       `{"name":"a","price":1,"currency":"USD","stock":1,"sale_ends_at":"9999-12-31T23:59:59.999999999Z"}`,
		"max values":      fmt.Sprintf(`{"name":%q,"price":%d,"currency":"JPY","stock":%d,"per_user_limit":%d,"payment_hold_seconds":%d}`, strings.Repeat("é", 100), int64(order.MaxPrice), order.MaxStock, order.MaxUserLimit, order.MaxHoldSecs),
		"unicode name":    `{"name":"📱 Phone «X»","price":1,"currency":"USD","stock":1}`,
		"explicit nulls":  `{"name":"a","price":1,"currency":"USD","stock":1,"per_user_limit":null,"sale_starts_at":null}`,
		"fractional secs": `{"name":"a","price":1,"currency":"USD","stock":1,"sale_starts_at":"2026-01-01T00:00:00.123456Z"}`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			resp, data := e.do(t, "POST", "/v1/skus", e.adminToken(t), body)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("status %d, want 201: %s", resp.StatusCode, data)
			}
		})
	}
	var s order.SKU
	e.mustDo(t, "POST", "/v1/skus", e.adminToken(t), cases["offset +23:59"], http.StatusCreated, &s)
	if want := time.Date(2025, 12, 31, 0, 1, 0, 0, time.UTC); s.SaleStartsAt == nil || !s.SaleStartsAt.Equal(want) {
		t.Errorf("sale_starts_at %v, want %v", s.SaleStartsAt, want)
	}
}

func TestCreateSKUInvalid(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	admin := e.adminToken(t)
	cases := []struct {
		name, body string
		fields     []string
	}{
		{"empty object", `{}`, []string{"name", "price", "currency", "stock"}},
		{"blank name", `{"name":"  ","price":1,"currency":"EUR","stock":1}`, []string{"name"}},
		{"name too long", `{"name":"` + strings.Repeat("a", 201) + `","price":1,"currency":"EUR","stock":1}`, []string{"name"}},
		{"NUL in name", `{"name":"a\u0000b","price":1,"currency":"EUR","stock":1}`, []string{"name"}},
		{"control in name", `{"name":"a\nb","price":1,"currency":"EUR","stock":1}`, []string{"name"}},
		{"negative price", `{"name":"a","price":-1,"currency":"EUR","stock":1}`, []string{"price"}},
		{"price too high", `{"name":"a","price":100000000001,"currency":"EUR","stock":1}`, []string{"price"}},
		{"lower-case currency", `{"name":"a","price":1,"currency":"eur","stock":1}`, []string{"currency"}},
		{"long currency", `{"name":"a","price":1,"currency":"EURO","stock":1}`, []string{"currency"}},
		{"negative stock", `{"name":"a","price":1,"currency":"EUR","stock":-5}`, []string{"stock"}},
		{"stock too high", `{"name":"a","price":1,"currency":"EUR","stock":1000000001}`, []string{"stock"}},
		{"per_user_limit 0", `{"name":"a","price":1,"currency":"EUR","stock":1,"per_user_limit":0}`, []string{"per_user_limit"}},
		{"per_user_limit too high", `{"name":"a","price":1,"currency":"EUR","stock":1,"per_user_limit":10001}`, []string{"per_user_limit"}},
		{"sale ends before it starts", `{"name":"a","price":1,"currency":"EUR","stock":1,"sale_starts_at":"2026-01-02T00:00:00Z","sale_ends_at":"2026-01-01T00:00:00Z"}`, []string{"sale_ends_at"}},
		{"sale ends when it starts", `{"name":"a","price":1,"currency":"EUR","stock":1,"sale_starts_at":"2026-01-01T00:00:00Z","sale_ends_at":"2026-01-01T00:00:00Z"}`, []string{"sale_ends_at"}},
		{"hold 0", `{"name":"a","price":1,"currency":"EUR","stock":1,"payment_hold_seconds":0}`, []string{"payment_hold_seconds"}},
		{"hold too long", `{"name":"a","price":1,"currency":"EUR","stock":1,"payment_hold_seconds":604801}`, []string{"payment_hold_seconds"}},
		{"price as string", `{"name":"a","price":"1","currency":"EUR","stock":1}`, []string{"price"}},
		{"price fraction", `{"name":"a","price":1.5,"currency":"EUR","stock":1}`, []string{"price"}},
		{"stock overflows int64", `{"name":"a","price":1,"currency":"EUR","stock":99999999999999999999}`, []string{"stock"}},
		{"name as number", `{"name":1,"price":1,"currency":"EUR","stock":1}`, []string{"name"}},
		{"bad time", `{"name":"a","price":1,"currency":"EUR","stock":1,"sale_starts_at":"tomorrow"}`, nil},
		{"year 10000 in UTC", `{"name":"a","price":1,"currency":"EUR","stock":1,"sale_ends_at":"9999-12-31T23:59:59-23:59"}`, []string{"sale_ends_at"}},
		{"year 0 in UTC", `{"name":"a","price":1,"currency":"EUR","stock":1,"sale_starts_at":"0001-01-01T00:00:00+01:00"}`, []string{"sale_starts_at"}},
	}
	before := e.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(t, "POST", "/v1/skus", admin, c.body)
			p := wantProblem(t, resp, body, http.StatusUnprocessableEntity)
			for _, f := range c.fields {
				if !p.hasField(f) {
					t.Errorf("problem does not name %s: %+v", f, p.Errors)
				}
			}
			if len(p.Errors) == 0 {
				t.Errorf("problem names no field: %+v", p)
			}
		})
	}
	e.assertUnchanged(t, before)
}

func TestGetSKUNotFound(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	for _, id := range []string{uuid.NewString(), "not-a-uuid", "00000000-0000-0000-0000-000000000000", strings.Repeat("a", 300), "%00", "{" + uuid.NewString() + "}"} {
		resp, body := e.do(t, "GET", "/v1/skus/"+id, alice, nil)
		wantProblem(t, resp, body, http.StatusNotFound)
	}
}

func TestListSKUs(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")

	var empty skuPage
	e.mustDo(t, "GET", "/v1/skus", alice, nil, http.StatusOK, &empty)
	if len(empty.Items) != 0 || empty.NextAfter != nil {
		t.Errorf("empty catalog: %+v", empty)
	}

	var ids []uuid.UUID
	for i := range 7 {
		ids = append(ids, e.createSKU(t, newSKU(fmt.Sprintf("SKU %d", i), int64(100*i), 10)).ID)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })

	for _, limit := range []int{1, 3, 6, 7, 50} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []uuid.UUID
			after, pages := "", 0
			for {
				var page skuPage
				e.mustDo(t, "GET", fmt.Sprintf("/v1/skus?limit=%d&after=%s", limit, after), alice, nil, http.StatusOK, &page)
				pages++
				if len(page.Items) > limit {
					t.Fatalf("page of %d items, limit %d", len(page.Items), limit)
				}
				for _, s := range page.Items {
					got = append(got, s.ID)
				}
				if page.NextAfter == nil {
					break
				}
				if *page.NextAfter != page.Items[len(page.Items)-1].ID {
					t.Fatalf("next_after %s is not the last item", page.NextAfter)
				}
				after = page.NextAfter.String()
			}
			if diff := cmp.Diff(ids, got); diff != "" {
				t.Errorf("SKUs over all pages (-want +got):\n%s", diff)
			}
			if want := (len(ids) + limit - 1) / limit; pages != want {
				t.Errorf("%d pages, want %d (no empty last page)", pages, want)
			}
		})
	}

	t.Run("default limit", func(t *testing.T) {
		var page skuPage
		e.mustDo(t, "GET", "/v1/skus", alice, nil, http.StatusOK, &page)
		if len(page.Items) != 7 || page.NextAfter != nil {
			t.Errorf("%d items, next_after %v", len(page.Items), page.NextAfter)
		}
	})

	for _, q := range []string{"limit=0", "limit=-1", "limit=201", "limit=abc", "limit=1.5", "after=abc", "after=" + strings.Repeat("f", 32), "limit=99999999999999999999"} {
		t.Run(q, func(t *testing.T) {
			resp, body := e.do(t, "GET", "/v1/skus?"+q, alice, nil)
			p := wantProblem(t, resp, body, http.StatusUnprocessableEntity)
			if field, _, _ := strings.Cut(q, "="); !p.hasField(field) {
				t.Errorf("problem does not name %s: %+v", field, p)
			}
		})
	}
}
