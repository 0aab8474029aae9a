package order_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// The partition's inner loops, without the database: deciding a batch
// against the ledger, and the command envelope's encoding and decoding.
//
//	go test -run '^$' -bench . -benchmem ./pkg/order/

// hotLedger is a ledger of one hot SKU with more stock than the benchmark
// takes, and its order lines.
func hotLedger() (*order.Ledger, []order.LineRequest) {
	sku := &order.SKU{ID: uuid.New(), Name: "hot", Price: 1999, Currency: "EUR", Stock: 1 << 40, InitialStock: 1 << 40}
	l := &order.Ledger{SKUs: map[uuid.UUID]*order.SKU{sku.ID: sku}, Held: map[order.UserSKU]int64{}, Now: time.Now()}
	return l, []order.LineRequest{{SKUID: sku.ID, Quantity: 1}}
}

// BenchmarkLedgerTake: one buyer's decision on a hot SKU (ns/op per order).
func BenchmarkLedgerTake(b *testing.B) {
	l, lines := hotLedger()
	users := make([]string, 5000)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if d := l.Take(users[i%len(users)], lines); !d.OK() {
			b.Fatal(d.Reason)
		}
	}
}

// benchCommands is n checkout commands of one hot SKU for partition p of
// 16, as the ingress builds them.
func benchCommands(n int) ([]order.Command, int) {
	_, lines := hotLedger()
	p := order.HomePartition(lines, 16)
	now := time.Now().UTC()
	cmds := make([]order.Command, n)
	for i := range cmds {
		id := uuid.New()
		cmds[i] = order.Command{ID: id, Kind: order.KindCheckout, Partition: p, At: now,
			Checkout: &order.Checkout{OrderID: id, OrderNumber: order.NumberFor(now, int64(i+1)), UserID: fmt.Sprintf("user-%d", i),
				AddressID: uuid.New(), PaymentMethod: order.PayCard, Lines: lines, ShippingFee: 1000,
				IdempotencyKey: uuid.NewString(), RequestHash: "0123456789abcdef0123456789abcdef",
				Prices: map[uuid.UUID]int64{lines[0].SKUID: 1999}}}
	}
	return cmds, p
}

// BenchmarkEnvelope: encoding and decoding (with validation) one JetStream
// message of 1 and of 256 commands (the publisher's largest batch).
func BenchmarkEnvelope(b *testing.B) {
	for _, n := range []int{1, 256} {
		cmds, p := benchCommands(n)
		data, err := order.EncodeEnvelope(cmds...)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("encode/commands=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := order.EncodeEnvelope(cmds...); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("decode/commands=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := order.DecodeEnvelope(data, p, 16); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
