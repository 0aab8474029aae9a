package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// The two statements of a partition's batch that carry its writes, each
// alone, inside a transaction that is rolled back (so ns/op is the
// statement's own cost, without the commit's fsync, which
// BenchmarkApplyBatch includes):
//
//	go test -run '^$' -bench 'StockUpdate|OrderInsert' ./pkg/postgres/

// BenchmarkStockUpdate: the guarded stock UPDATE of one hot SKU (one per
// SKU per batch, whatever the batch's size).
func BenchmarkStockUpdate(b *testing.B) {
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	_, db := pgtest.New(b)
	sku := uuid.New()
	const stock = int64(1_000_000_000)
	if _, err := db.ExecContext(ctx, `INSERT INTO skus (id, name, price, currency, stock, initial_stock)
		VALUES ($1, 'hot', 1999, 'EUR', $2, $2)`, sku, stock); err != nil {
		b.Fatal(err)
	}
	ids := []string{sku.String()}
	for b.Loop() {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		err = postgres.UpdateSKUsGuardedForTest(ctx, tx, ids, []int64{stock - 500}, []int64{500}, []int64{0},
			[]int64{stock}, []int64{0}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		tx.Rollback()
	}
}

// BenchmarkOrderInsert: the multi-row INSERTs of a batch's new orders and
// their lines, for batches of 1, 100 and 500 orders; orders/s is reported.
func BenchmarkOrderInsert(b *testing.B) {
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	_, db := pgtest.New(b)
	sku := uuid.New()
	addr := uuid.New()
	if _, err := db.ExecContext(ctx, `INSERT INTO skus (id, name, price, currency, stock, initial_stock)
		VALUES ($1, 'hot', 1999, 'EUR', 10, 10)`, sku); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		VALUES ($1, 'bench', 'R', 'L1', 'Berlin', '10115', 'DE')`, addr); err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("orders=%d", size), func(b *testing.B) {
			orders := make([]*order.Order, size)
			for b.Loop() {
				now := time.Now().UTC()
				for i := range orders {
					o := &order.Order{ID: uuid.New(), Number: order.NumberFor(now, int64(i)) + uuid.NewString()[:8], UserID: "bench",
						AddressID: addr, PaymentMethod: order.PayCard, Status: order.StatusConfirmed, Currency: "EUR",
						Lines: []order.Line{{SKUID: sku, Quantity: 1, UnitPrice: 1999}}, ShippingFee: 1000,
						AcceptedAt: now, DecidedAt: &now, HoldUntil: &now, UpdatedAt: now}
					o.Price()
					orders[i] = o
				}
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := postgres.InsertOrdersForTest(ctx, tx, orders, 0); err != nil {
					b.Fatal(err)
				}
				tx.Rollback()
			}
			b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}
