package order

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
)

// skuIn returns a SKU id in partition p of n.
func skuIn(p, n int) uuid.UUID {
	for {
		id := uuid.New()
		if Partition(id, n) == p {
			return id
		}
	}
}

func checkoutCmd(n int) Command {
	s := skuIn(1, n)
	return Command{
		ID: uuid.New(), Kind: KindCheckout, Partition: 1, At: time.Now().UTC(),
		Checkout: &Checkout{
			OrderID: uuid.New(), OrderNumber: "FS-20261126-000000001", UserID: "u1",
			AddressID: uuid.New(), PaymentMethod: PayCard, ShippingFee: 1000,
			Lines: []LineRequest{{SKUID: s, Quantity: 1}},
		},
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	c := checkoutCmd(4)
	data, err := EncodeEnvelope(c, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEnvelope(data, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Checkout.OrderID != c.Checkout.OrderID {
		t.Fatalf("decoded %+v", got)
	}
}

func TestDecodeEnvelopeRefusesPoison(t *testing.T) {
	good := checkoutCmd(4)
	mutate := func(f func(c *Command)) []byte {
		c := good
		k := *good.Checkout
		c.Checkout = &k
		f(&c)
		data, _ := EncodeEnvelope(c)
		return data
	}
	tests := map[string][]byte{
		"not json":        []byte("{"),
		"empty":           []byte(`{"commands":[]}`),
		"unknown field":   []byte(`{"commands":[],"x":1}`),
		"trailing":        append(mutate(func(*Command) {}), []byte(" {}")...),
		"wrong partition": mutate(func(c *Command) { c.Partition = 2 }),
		"no id":           mutate(func(c *Command) { c.ID = uuid.Nil }),
		"unknown kind":    mutate(func(c *Command) { c.Kind = "explode" }),
		"two bodies":      mutate(func(c *Command) { c.Restock = &Restock{SKUID: uuid.New(), Quantity: 1} }),
		"zero quantity":   mutate(func(c *Command) { c.Checkout.Lines = []LineRequest{{SKUID: c.Checkout.Lines[0].SKUID}} }),
		"bad payment":     mutate(func(c *Command) { c.Checkout.PaymentMethod = "iou" }),
		"not home":        mutate(func(c *Command) { c.Checkout.Lines = []LineRequest{{SKUID: skuIn(3, 4), Quantity: 1}} }),
		"negative fee":    mutate(func(c *Command) { c.Checkout.ShippingFee = -1 }),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeEnvelope(data, 1, 4)
			if code := ErrorCode(err); code != EMALFORMED && code != EINVALID {
				t.Fatalf("got %v (code %q), want a malformed or invalid error", err, code)
			}
		})
	}
}

// FuzzDecodeEnvelope: whatever a message holds, decoding never panics, and
// what it accepts is valid and re-encodes to something it accepts again.
func FuzzDecodeEnvelope(f *testing.F) {
	good, _ := EncodeEnvelope(checkoutCmd(4))
	f.Add(good)
	f.Add([]byte(`{"commands":[{"id":"6f1c1d0e-8a38-4e55-9d43-5a4a0f1f2c11","kind":"restock","partition":1,"at":"2026-11-26T00:00:00Z","restock":{"sku_id":"6f1c1d0e-8a38-4e55-9d43-5a4a0f1f2c12","quantity":5}}]}`))
	f.Add([]byte(`{"commands":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := DecodeEnvelope(data, 1, 4)
		if err != nil {
			if c := ErrorCode(err); c != EMALFORMED && c != EINVALID {
				t.Fatalf("error code %q: %v", c, err)
			}
			return
		}
		again, err := json.Marshal(Envelope{Commands: cmds})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeEnvelope(again, 1, 4); err != nil {
			t.Fatalf("accepted envelope does not round-trip: %v", err)
		}
	})
}
