package ingress

import (
	"bytes"
	"errors"
	"testing"

	"github.com/flashsale/orderd/pkg/order"
)

// FuzzCheckoutDecode drives the decoding and shape validation of a checkout
// body with arbitrary bytes: it must never panic, and every refusal must be
// an *order.Error that maps to a 4xx status, never a 500. An accepted body
// must be one a partition accepts: exactly one of items and cart_sku_ids,
// valid lines, a supported payment method. The seed corpus is in
// testdata/fuzz/FuzzCheckoutDecode.
func FuzzCheckoutDecode(f *testing.F) {
	for _, seed := range []string{
		`{"address_id":"6f1c1f3e-2a53-4f5e-9b3c-0d7a6a1b2c3d","payment_method":"card","items":[{"sku_id":"0b8e3f0a-7c55-4b59-9f6a-3d1e2c4b5a69","quantity":1}]}`,
		`{"address_id":"6f1c1f3e-2a53-4f5e-9b3c-0d7a6a1b2c3d","payment_method":"wallet","cart_sku_ids":["0b8e3f0a-7c55-4b59-9f6a-3d1e2c4b5a69"]}`,
		`{"address_id":"6f1c1f3e-2a53-4f5e-9b3c-0d7a6a1b2c3d","payment_method":"card","items":[],"cart_sku_ids":[]}`,
		`{"items":[{"sku_id":"0b8e3f0a-7c55-4b59-9f6a-3d1e2c4b5a69","quantity":1e3}]}`,
		`{"items":null,"cart_sku_ids":null}`,
		`[]`, `null`, `"x"`, `{}`, `{"address_id":1}`, ``, `{"a":`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeCheckout(bytes.NewReader(data))
		if err != nil {
			var e *order.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *order.Error", err, err)
			}
			st, ok := statusOf[e.Code]
			if !ok || st.status < 400 || st.status > 499 {
				t.Fatalf("error %v maps to %d, want a 4xx", err, st.status)
			}
			return
		}
		if (req.Items == nil) == (req.CartSKUIDs == nil) || !req.PaymentMethod.Valid() {
			t.Fatalf("accepted %+v", req)
		}
		if req.Items != nil {
			if err := order.ValidateLines(req.Items, "items"); err != nil {
				t.Fatalf("accepted invalid lines: %v", err)
			}
		}
		if len(req.hash()) != 64 {
			t.Fatal("bad hash")
		}
	})
}
