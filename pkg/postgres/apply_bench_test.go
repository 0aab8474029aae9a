package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

// BenchmarkApplyBatch measures PostgreSQL's rate for the workers' batched
// transaction: one hot SKU, checkout commands of one unit each (direct
// purchase, distinct users with an address each), applied through
// DB.ApplyBatch in batches of 1, 100 and 500 (the default BATCH_SIZE), one
// transaction per batch, one partition writer at a time as in the service.
// The stock never runs out, so every order is confirmed: the write-heavy
// case. ns/op is per batch; orders/s is reported. The outbox is not
// relayed, so its rows accumulate as they would behind a slow relay.
//
//	go test -run '^$' -bench ApplyBatch -benchtime 3s ./pkg/postgres/
func BenchmarkApplyBatch(b *testing.B) {
	// The migrations of each fresh database log at info: keep the
	// benchmark's result lines whole.
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.DiscardHandler))
	for _, size := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) { benchApplyBatch(b, size) })
	}
}

// benchUsers is how many buyers the commands cycle through.
const benchUsers = 5000

func benchApplyBatch(b *testing.B, size int) {
	const parts = 16
	ctx := context.Background()
	_, db := pgtest.New(b)
	sku := ptSKUIn(0, parts)
	if _, err := db.ExecContext(ctx, `INSERT INTO skus (id, name, price, currency, stock, initial_stock)
		VALUES ($1, 'hot', 1999, 'EUR', $2, $2)`, sku, int64(1_000_000_000)); err != nil {
		b.Fatal(err)
	}
	users := make([]string, benchUsers)
	addrs := make([]string, benchUsers)
	addrIDs := make([]uuid.UUID, benchUsers)
	for i := range users {
		users[i] = fmt.Sprintf("bench-%d", i)
		addrIDs[i] = uuid.New()
		addrs[i] = addrIDs[i].String()
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		SELECT a::uuid, u, 'R', 'L1', 'Berlin', '10115', 'DE' FROM unnest($1::text[], $2::text[]) AS t(a, u)`,
		pq.Array(addrs), pq.Array(users)); err != nil {
		b.Fatal(err)
	}
	lines := []order.LineRequest{{SKUID: sku, Quantity: 1}}
	home := order.HomePartition(lines, parts)
	cfg := postgres.PartitionConfig{Partitions: parts, PaymentHold: time.Hour}
	seq := 0
	batch := func() []order.Command {
		cmds := make([]order.Command, size)
		now := time.Now()
		for j := range cmds {
			seq++
			u := seq % benchUsers
			cmds[j] = order.Command{
				ID: uuid.New(), Kind: order.KindCheckout, Partition: home, At: now,
				Checkout: &order.Checkout{
					OrderID: uuid.New(), OrderNumber: order.NumberFor(now, int64(seq)), UserID: users[u],
					AddressID: addrIDs[u], PaymentMethod: order.PayCard, Lines: lines, ShippingFee: 1000,
				},
			}
		}
		return cmds
	}

	var took time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		cmds := batch()
		b.StartTimer()
		start := time.Now()
		res, err := db.ApplyBatch(ctx, home, cmds, cfg)
		took += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if res.Applied != size {
			b.Fatalf("applied %d of %d", res.Applied, size)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/took.Seconds(), "orders/s")
}
