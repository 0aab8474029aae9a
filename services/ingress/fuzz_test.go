package ingress

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// FuzzDecode feeds arbitrary bodies to decodeStrict for every request type
// the catalog routes decode, then to the checks that follow decoding. None
// may panic, and every error must be an *order.Error whose code maps to a
// 4xx status: bad input is never a 500.
func FuzzDecode(f *testing.F) {
	id := uuid.MustParse("7b5e2c1a-3f4d-4e5a-9b8c-0d1e2f3a4b5c")
	for _, s := range []string{
		`{"name":"Phone","price":49900,"currency":"EUR","stock":10,"per_user_limit":2,"sale_starts_at":"2026-01-01T00:00:00Z","sale_ends_at":"2026-01-02T00:00:00+01:00","payment_hold_seconds":60}`,
		`{"recipient":"A","line1":"1 Road","line2":null,"city":"Paris","postal_code":"75001","country":"FR","phone":"+33"}`,
		`{"quantity":3}`,
		`{"items":[{"sku_id":"` + id.String() + `","quantity":2}]}`,
		`{"cart_sku_ids":["` + id.String() + `"]}`,
		`{"items":[{"sku_id":"` + id.String() + `","quantity":1.5}]}`,
		`{"items":[{"sku_id":"abc","quantity":"abc"}],"cart_sku_ids":[]}`,
		`{"sale_ends_at":"9999-12-31T23:59:59-23:59"}`,
		`{"quantity":99999999999999999999}`,
		`[{"quantity":1}]`, `null`, `"x"`, `{"a":1}`, `{} {}`, `{"name":"\u0000"}`, ``,
	} {
		f.Add([]byte(s))
	}
	sku := &order.SKU{ID: id, Name: "Phone", Price: order.MaxPrice, Currency: "EUR", Stock: order.MaxStock}
	skus := map[uuid.UUID]*order.SKU{id: sku}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				return
			}
			e, ok := err.(*order.Error)
			if !ok {
				t.Fatalf("%s: %T %v, want *order.Error", what, err, err)
			}
			if st := statusOf[e.Code].status; st < 400 || st > 499 {
				t.Fatalf("%s: code %q (status %d), want a 4xx: %v", what, e.Code, st, err)
			}
		}

		var n order.NewSKU
		if err := decodeStrict(bytes.NewReader(data), &n); err != nil {
			check("NewSKU", err)
		} else if err := n.Validate(); err != nil {
			check("NewSKU.Validate", err)
		} else {
			// What Validate passes, the database and JSON can hold.
			for _, at := range []*time.Time{n.SaleStartsAt, n.SaleEndsAt} {
				if at != nil {
					if _, err := at.UTC().Truncate(time.Microsecond).MarshalJSON(); err != nil {
						t.Fatalf("valid SKU with a time JSON cannot write: %v", err)
					}
				}
			}
		}

		var a order.NewAddress
		if err := decodeStrict(bytes.NewReader(data), &a); err != nil {
			check("NewAddress", err)
		} else {
			check("NewAddress.Validate", a.Validate())
		}

		var q cartQuantity
		check("cartQuantity", decodeStrict(bytes.NewReader(data), &q))

		var p previewRequest
		if err := decodeStrict(bytes.NewReader(data), &p); err != nil {
			check("previewRequest", err)
		} else if err := p.validate(); err != nil {
			check("previewRequest.validate", err)
		} else if p.Items != nil {
			_, err := order.QuoteLines(p.Items, skus, testShippingFee, "items")
			check("QuoteLines", err)
		} else {
			_, err := order.QuoteCart(p.CartSKUIDs, map[uuid.UUID]int64{id: 3}, skus, testShippingFee, "cart_sku_ids")
			check("QuoteCart", err)
		}
	})
}
