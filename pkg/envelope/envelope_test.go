package envelope_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/envelope"
	"github.com/flashsale/orderd/pkg/order"
)

const parts = 16

// skuIn returns a SKU id of partition p of parts.
func skuIn(p int) uuid.UUID {
	for {
		id := uuid.New()
		if order.Partition(id, parts) == p {
			return id
		}
	}
}

// everyKind returns one valid command of each kind for partition p.
func everyKind(p int) []order.Command {
	at := time.Date(2026, 12, 4, 18, 30, 0, 123456000, time.UTC)
	sku, other := skuIn(p), skuIn((p+1)%parts)
	checkout := order.Checkout{
		OrderID: uuid.New(), OrderNumber: "FS-20261204-000001001", UserID: "user-1", AddressID: uuid.New(),
		PaymentMethod: order.PayCard, Lines: []order.LineRequest{{SKUID: sku, Quantity: 2}, {SKUID: other, Quantity: 1}},
		ShippingFee: 1000, IdempotencyKey: "key-1", RequestHash: "abcdef", FromCart: true,
		Prices: map[uuid.UUID]int64{sku: 1999, other: 500},
	}
	return []order.Command{
		{ID: uuid.New(), Kind: order.KindCheckout, Partition: p, At: at, Checkout: &checkout},
		{ID: uuid.New(), Kind: order.KindReserve, Partition: p, At: at, Reserve: &order.Reserve{
			OrderID: uuid.New(), UserID: "user-2", Home: (p + 1) % parts,
			Lines: []order.LineRequest{{SKUID: sku, Quantity: 3}}, Prices: map[uuid.UUID]int64{sku: 7}}},
		{ID: uuid.New(), Kind: order.KindRelease, Partition: p, At: at, Release: &order.Release{OrderID: uuid.New(), Reason: "rejected"}},
		{ID: uuid.New(), Kind: order.KindRestock, Partition: p, At: at, Restock: &order.Restock{SKUID: sku, Quantity: 40}},
		{ID: uuid.New(), Kind: order.KindCancel, Partition: p, Cancel: &order.Cancel{OrderID: uuid.New(), UserID: "user-3"}},
	}
}

func rejection(p int) order.Command {
	k := everyKind(p)[0].Checkout
	return order.Command{ID: order.RejectionCommandID(k.OrderID), Kind: order.KindRecordRejection, Partition: p,
		At: time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC),
		Rejection: &order.Rejection{Checkout: *k, Reason: order.RejectOutOfStock, SKUs: []uuid.UUID{k.Lines[0].SKUID},
			DecidedAt: time.Date(2026, 12, 4, 18, 0, 1, 0, time.UTC)}}
}

func TestRoundTrip(t *testing.T) {
	p := 3
	cmds := append(everyKind(p), rejection(p))
	data, err := envelope.Encode(cmds...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := envelope.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cmds, got); diff != "" {
		t.Errorf("decoded commands differ (-want +got):\n%s", diff)
	}
	if _, err := envelope.ForPartition(data, p, parts); err == nil {
		t.Error("ForPartition accepted a record of an ingress rejection")
	}
	part, err := envelope.ForPartition(data[:0:0], p, parts)
	if err == nil || part != nil {
		t.Errorf("ForPartition of nothing = %v, %v; want an error", part, err)
	}
	valid, _ := envelope.Encode(everyKind(p)...)
	if got, err := envelope.ForPartition(valid, p, parts); err != nil || len(got) != 5 {
		t.Errorf("ForPartition = %d commands, %v; want 5, nil", len(got), err)
	}
	if _, err := envelope.ForPartition(valid, p+1, parts); order.ErrorCode(err) != order.EINVALID {
		t.Errorf("ForPartition on the wrong partition: %v, want EINVALID", err)
	}
	rej, _ := envelope.Encode(rejection(p))
	if got, err := envelope.ForIngress(rej, parts); err != nil || len(got) != 1 {
		t.Errorf("ForIngress = %d commands, %v; want 1, nil", len(got), err)
	}
	if _, err := envelope.ForIngress(valid, parts); order.ErrorCode(err) != order.EINVALID {
		t.Errorf("ForIngress of partition commands: %v, want EINVALID", err)
	}
}

// A publisher packs commands it encoded one by one.
func TestAppend(t *testing.T) {
	cmds := everyKind(5)
	var body []byte
	for i := range cmds {
		var err error
		if body, err = envelope.AppendCommand(body, &cmds[i]); err != nil {
			t.Fatal(err)
		}
	}
	data := append(envelope.AppendHeader(nil, len(cmds)), body...)
	whole, _ := envelope.Encode(cmds...)
	if string(data) != string(whole) {
		t.Error("header + appended commands differ from Encode")
	}
	if _, err := envelope.AppendCommand(nil, &order.Command{Kind: "teleport"}); err == nil {
		t.Error("an unknown kind was encoded")
	}
	if _, err := envelope.AppendCommand(nil, &order.Command{Kind: order.KindCheckout}); err == nil {
		t.Error("a checkout without its body was encoded")
	}
}

// Streams written by earlier releases hold JSON envelopes: they still
// decode, as strictly as before.
func TestJSONEnvelopes(t *testing.T) {
	cmds := everyKind(1)
	data, _ := json.Marshal(order.Envelope{Commands: cmds})
	got, err := envelope.ForPartition(data, 1, parts)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cmds, got); diff != "" {
		t.Errorf("decoded commands differ (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		`{"commands":[]}`,
		`{"commands":[{"id":"x"}]}`,
		`{"commands":[],"extra":1}`,
		string(data) + `{}`,
	} {
		if _, err := envelope.Decode([]byte(bad)); order.ErrorCode(err) != order.EMALFORMED {
			t.Errorf("Decode(%.40q) = %v, want EMALFORMED", bad, err)
		}
	}
}

// Every prefix of a valid envelope, and every single-byte change of its
// header, is refused with EMALFORMED, never a panic.
func TestMalformed(t *testing.T) {
	data, _ := envelope.Encode(append(everyKind(2), rejection(2))...)
	for i := range data {
		if _, err := envelope.Decode(data[:i]); order.ErrorCode(err) != order.EMALFORMED {
			t.Fatalf("Decode of the first %d of %d bytes: %v, want EMALFORMED", i, len(data), err)
		}
	}
	cases := map[string][]byte{
		"trailing byte":   append(append([]byte{}, data...), 0),
		"bad magic":       append([]byte{'X'}, data[1:]...),
		"future version":  append([]byte{'O', 'C', 9}, data[3:]...),
		"zero commands":   envelope.AppendHeader(nil, 0),
		"too many":        envelope.AppendHeader(nil, envelope.MaxCommands+1),
		"more than bytes": envelope.AppendHeader(nil, 4000),
		"unknown kind":    append(envelope.AppendHeader(nil, 1), append(make([]byte, 16), 99, 0, 0)...),
	}
	for name, b := range cases {
		if _, err := envelope.Decode(b); order.ErrorCode(err) != order.EMALFORMED {
			t.Errorf("%s: %v, want EMALFORMED", name, err)
		}
	}
	// A string longer than any field may be is refused before it is read.
	long := envelope.AppendHeader(nil, 1)
	long = append(long, make([]byte, 16)...)
	long = append(long, 5, 0, 0) // cancel, partition 0, no time
	long = append(long, make([]byte, 16)...)
	long = append(long, 0xff, 0xff, 0x03) // a user id of 65535 bytes
	if _, err := envelope.Decode(long); order.ErrorCode(err) != order.EMALFORMED {
		t.Errorf("an oversized string: %v, want EMALFORMED", err)
	}
}

// FuzzDecode: no input panics, allocates beyond its size's worth, or
// decodes to commands that encode to something that decodes differently.
func FuzzDecode(f *testing.F) {
	valid, _ := envelope.Encode(append(everyKind(4), rejection(4))...)
	f.Add(valid)
	one, _ := envelope.Encode(everyKind(0)[0])
	f.Add(one)
	js, _ := json.Marshal(order.Envelope{Commands: everyKind(0)[:1]})
	f.Add(js)
	f.Add([]byte("OC\x01\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := envelope.Decode(data)
		if err != nil {
			var oe *order.Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v is not an *order.Error", err)
			}
			return
		}
		if data[0] == '{' {
			return // JSON: its own encoder's business
		}
		again, err := envelope.Encode(cmds...)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := envelope.Decode(again)
		if err != nil {
			t.Fatalf("decode of the re-encoding: %v", err)
		}
		if diff := cmp.Diff(cmds, back); diff != "" {
			t.Fatalf("re-encoding changed the commands:\n%s", diff)
		}
	})
}

// BenchmarkDecode compares this format with the JSON envelope it
// replaces: one message of 1 and of 256 checkouts, decoded and validated
// as a partition does.
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{1, 256} {
		cmds := make([]order.Command, n)
		p := 7
		for i := range cmds {
			c := everyKind(p)[0]
			c.Checkout.Lines = c.Checkout.Lines[:1]
			delete(c.Checkout.Prices, everyKind(p)[0].Checkout.Lines[1].SKUID)
			c.Checkout.Prices = map[uuid.UUID]int64{c.Checkout.Lines[0].SKUID: 1999}
			c.Checkout.UserID = fmt.Sprintf("user-%d", i)
			c.Checkout.FromCart = false
			cmds[i] = c
		}
		bin, _ := envelope.Encode(cmds...)
		js, _ := json.Marshal(order.Envelope{Commands: cmds})
		for _, f := range []struct {
			name string
			data []byte
		}{{"binary", bin}, {"json", js}} {
			b.Run(fmt.Sprintf("%s/commands=%d", f.name, n), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(f.data)))
				for b.Loop() {
					if _, err := envelope.ForPartition(f.data, p, parts); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/command")
			})
		}
		b.Run(fmt.Sprintf("encode-binary/commands=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := envelope.Encode(cmds...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
