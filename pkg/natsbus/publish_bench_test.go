package natsbus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// BenchmarkCommandPublish measures durable command writes per second as the
// ingress issues them: concurrent callers, one JetStream PubAck each, with
// fsync on every write (sync always, the default) or the server's lazy
// two-minute interval, one command per message or group-committed by
// BatchPublisher. ns/op is per command; commands/s is reported too.
//
//	go test -run '^$' -bench CommandPublish -benchtime 20000x ./pkg/natsbus/
func BenchmarkCommandPublish(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, batch := range []int{1, 256} {
			name := fmt.Sprintf("sync=%s/batch=%d", map[bool]string{true: "always", false: "2m"}[sync], batch)
			b.Run(name, func(b *testing.B) { benchPublish(b, sync, batch) })
		}
	}
}

func benchPublish(b *testing.B, syncAlways bool, maxBatch int) {
	s, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{Addr: "127.0.0.1:0", StoreDir: b.TempDir(), SyncAlways: syncAlways})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := natsbus.EnsureStreams(ctx, js, natsbus.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	pub := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, MaxBatch: maxBatch, InFlight: 2})
	defer pub.Close()
	const callers = 256
	cmds := make(chan order.Command, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for c := range cmds {
				if err := pub.Publish(ctx, c); err != nil {
					b.Error(err)
				}
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		cmds <- order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 0, At: start,
			Restock: &order.Restock{SKUID: uuid.New(), Quantity: 1}}
	}
	close(cmds)
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
}
