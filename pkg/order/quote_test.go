package order_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// fieldsOf returns the fields an error names, or nil for nil.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	if order.ErrorCode(err) != order.EINVALID {
		t.Fatalf("error %v, want EINVALID", err)
	}
	var out []string
	for _, f := range order.ErrorFields(err) {
		out = append(out, f.Field)
	}
	return out
}

func TestValidateLines(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	many := make([]order.LineRequest, order.MaxLines+1)
	for i := range many {
		many[i] = order.LineRequest{SKUID: uuid.New(), Quantity: 1}
	}
	cases := []struct {
		name  string
		lines []order.LineRequest
		want  []string
	}{
		{"one line", []order.LineRequest{{a, 1}}, nil},
		{"two lines at the limits", []order.LineRequest{{a, 1}, {b, order.MaxLineQty}}, nil},
		{"the most lines", many[:order.MaxLines], nil},
		{"none", nil, []string{"items"}},
		{"empty", []order.LineRequest{}, []string{"items"}},
		{"too many", many, []string{"items"}},
		{"quantity 0", []order.LineRequest{{a, 0}}, []string{"items[0].quantity"}},
		{"quantity -1", []order.LineRequest{{a, -1}}, []string{"items[0].quantity"}},
		{"quantity over the line maximum", []order.LineRequest{{a, order.MaxLineQty + 1}}, []string{"items[0].quantity"}},
		{"no SKU", []order.LineRequest{{uuid.Nil, 1}}, []string{"items[0].sku_id"}},
		{"SKU twice", []order.LineRequest{{a, 1}, {b, 1}, {a, 2}}, []string{"items[2].sku_id"}},
		{"every fault at once", []order.LineRequest{{uuid.Nil, 0}, {a, 1}, {a, -5}}, []string{"items[0].sku_id", "items[0].quantity", "items[2].sku_id", "items[2].quantity"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, fieldsOf(t, order.ValidateLines(c.lines, "items"))); diff != "" {
				t.Errorf("fields at fault (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateSKUIDs(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	many := make([]uuid.UUID, order.MaxLines+1)
	for i := range many {
		many[i] = uuid.New()
	}
	cases := []struct {
		name string
		ids  []uuid.UUID
		want []string
	}{
		{"two", []uuid.UUID{a, b}, nil},
		{"the most", many[:order.MaxLines], nil},
		{"none", nil, []string{"ids"}},
		{"too many", many, []string{"ids"}},
		{"nil id", []uuid.UUID{a, uuid.Nil}, []string{"ids[1]"}},
		{"twice", []uuid.UUID{a, b, b}, []string{"ids[2]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, fieldsOf(t, order.ValidateSKUIDs(c.ids, "ids"))); diff != "" {
				t.Errorf("fields at fault (-want +got):\n%s", diff)
			}
		})
	}
}

// catalog returns SKUs keyed by id.
func catalog(skus ...*order.SKU) map[uuid.UUID]*order.SKU {
	m := make(map[uuid.UUID]*order.SKU, len(skus))
	for _, s := range skus {
		m[s.ID] = s
	}
	return m
}

func sku(name string, price, stock int64, currency string) *order.SKU {
	return &order.SKU{ID: uuid.New(), Name: name, Price: price, Stock: stock, Currency: currency}
}

func TestQuoteLines(t *testing.T) {
	phone, case_ := sku("Phone", 49900, 10, "EUR"), sku("Case", 1500, 2, "EUR")
	usd, gone := sku("Dollar", 100, 5, "USD"), sku("Gone", 100, 0, "EUR")
	skus := catalog(phone, case_, usd, gone)

	q, err := order.QuoteLines([]order.LineRequest{{phone.ID, 2}, {case_.ID, 2}}, skus, 1000, "items")
	if err != nil {
		t.Fatal(err)
	}
	want := &order.Quote{
		Items: []order.Line{
			{SKUID: phone.ID, Name: "Phone", Quantity: 2, UnitPrice: 49900, LineTotal: 99800},
			{SKUID: case_.ID, Name: "Case", Quantity: 2, UnitPrice: 1500, LineTotal: 3000},
		},
		ItemCount: 4, Subtotal: 102800, ShippingFee: 1000, GrandTotal: 103800, Currency: "EUR",
	}
	if diff := cmp.Diff(want, q); diff != "" {
		t.Errorf("quote (-want +got):\n%s", diff)
	}
	if q, err := order.QuoteLines([]order.LineRequest{{phone.ID, 1}}, skus, 0, "items"); err != nil || q.GrandTotal != 49900 {
		t.Errorf("no shipping fee: %+v, %v", q, err)
	}

	missing := uuid.New()
	cases := []struct {
		name    string
		lines   []order.LineRequest
		want    []string
		mention string
	}{
		{"unknown SKU", []order.LineRequest{{phone.ID, 1}, {missing, 1}}, []string{"items[1]"}, missing.String()},
		{"over stock", []order.LineRequest{{case_.ID, 3}}, []string{"items[0].quantity"}, "2 left"},
		{"sold out", []order.LineRequest{{gone.ID, 1}}, []string{"items[0].quantity"}, gone.ID.String()},
		{"two currencies", []order.LineRequest{{phone.ID, 1}, {usd.ID, 1}}, []string{"items[1]"}, "USD"},
		{"all at once", []order.LineRequest{{missing, 1}, {case_.ID, 9}, {usd.ID, 1}, {phone.ID, 1}}, []string{"items[0]", "items[1].quantity", "items[3]"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := order.QuoteLines(c.lines, skus, 1000, "items")
			if q != nil {
				t.Errorf("quote %+v with an error", q)
			}
			if diff := cmp.Diff(c.want, fieldsOf(t, err)); diff != "" {
				t.Errorf("fields at fault (-want +got):\n%s", diff)
			}
			if c.mention != "" && !strings.Contains(err.Error()+details(err), c.mention) {
				t.Errorf("error %v does not mention %q", err, c.mention)
			}
		})
	}
}

func details(err error) string {
	var s []string
	for _, f := range order.ErrorFields(err) {
		s = append(s, f.Detail)
	}
	return strings.Join(s, "; ")
}

func TestCartLines(t *testing.T) {
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	cart := map[uuid.UUID]int64{a: 2, b: 0, c: 5, uuid.New(): 7}
	got := order.CartLines([]uuid.UUID{c, b, d, a}, cart)
	want := []order.LineRequest{{c, 5}, {a, 2}} // in the order asked; 0 and absent skipped
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if got := order.CartLines([]uuid.UUID{d}, cart); got == nil || len(got) != 0 {
		t.Errorf("nothing in the cart: %v, want an empty slice", got)
	}
	if got := order.CartLines([]uuid.UUID{a}, map[uuid.UUID]int64{a: -3}); len(got) != 0 {
		t.Errorf("a negative quantity is kept: %v", got)
	}
}

func TestQuoteCart(t *testing.T) {
	a, b := sku("A", 1000, 10, "EUR"), sku("B", 250, 3, "EUR")
	zero, absent, usd := sku("Zero", 5, 10, "EUR"), sku("Absent", 7, 10, "EUR"), sku("Dollar", 1, 10, "USD")
	skus := catalog(a, b, zero, absent, usd)
	cart := map[uuid.UUID]int64{a.ID: 2, b.ID: 3, zero.ID: 0, usd.ID: 1}

	q, err := order.QuoteCart([]uuid.UUID{b.ID, zero.ID, absent.ID, a.ID}, cart, skus, 1000, "cart_sku_ids")
	if err != nil {
		t.Fatal(err)
	}
	want := &order.Quote{
		Items: []order.Line{
			{SKUID: b.ID, Name: "B", Quantity: 3, UnitPrice: 250, LineTotal: 750},
			{SKUID: a.ID, Name: "A", Quantity: 2, UnitPrice: 1000, LineTotal: 2000},
		},
		ItemCount: 5, Subtotal: 2750, ShippingFee: 1000, GrandTotal: 3750, Currency: "EUR",
	}
	if diff := cmp.Diff(want, q); diff != "" {
		t.Errorf("quote (-want +got):\n%s", diff)
	}

	missing := uuid.New()
	cases := []struct {
		name string
		ids  []uuid.UUID
		cart map[uuid.UUID]int64
		want []string
	}{
		// A SKU that does not exist is named even when the cart lacks it.
		{"unknown SKU", []uuid.UUID{a.ID, missing}, cart, []string{"cart_sku_ids[1]"}},
		{"nothing in the cart", []uuid.UUID{zero.ID, absent.ID}, cart, []string{"cart_sku_ids"}},
		{"empty cart", []uuid.UUID{a.ID}, nil, []string{"cart_sku_ids"}},
		// Errors name the id's index in the request, not the line's.
		{"over stock after skipped ids", []uuid.UUID{zero.ID, absent.ID, b.ID}, map[uuid.UUID]int64{b.ID: 4}, []string{"cart_sku_ids[2].quantity"}},
		{"two currencies after a skipped id", []uuid.UUID{a.ID, zero.ID, usd.ID}, cart, []string{"cart_sku_ids[2]"}},
		{"over the line maximum", []uuid.UUID{a.ID}, map[uuid.UUID]int64{a.ID: order.MaxLineQty + 1}, []string{"cart_sku_ids[0]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := order.QuoteCart(c.ids, c.cart, skus, 1000, "cart_sku_ids")
			if q != nil {
				t.Errorf("quote %+v with an error", q)
			}
			if diff := cmp.Diff(c.want, fieldsOf(t, err)); diff != "" {
				t.Errorf("fields at fault (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewSKUValidateTimes(t *testing.T) {
	base := func() order.NewSKU {
		p, s := int64(1), int64(1)
		return order.NewSKU{Name: "a", Price: &p, Currency: "EUR", Stock: &s}
	}
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	cases := []struct {
		name         string
		starts, ends *time.Time
		want         []string
	}{
		{"none", nil, nil, nil},
		{"ordered", at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), nil},
		{"year 9999", nil, at("9999-12-31T23:59:59.999999999Z"), nil},
		{"year 10000 in UTC", nil, at("9999-12-31T23:59:59-23:59"), []string{"sale_ends_at"}},
		{"year 0 in UTC", at("0001-01-01T00:00:00+01:00"), nil, []string{"sale_starts_at"}},
		{"ends before it starts", at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z"), []string{"sale_ends_at"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := base()
			n.SaleStartsAt, n.SaleEndsAt = c.starts, c.ends
			got := fieldsOf(t, n.Validate())
			slices.Sort(got)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("fields at fault (-want +got):\n%s", diff)
			}
		})
	}
}
