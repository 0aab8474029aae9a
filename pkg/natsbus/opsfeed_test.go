package natsbus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
)

// TestOpsFeedSumsProcesses runs two feeds, as two ingress processes would:
// each sees the accepted checkouts of both, and every order event once.
func TestOpsFeedSumsProcesses(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	feed := func(name string, accepted *atomic.Int64) (*nats.Conn, jetstream.JetStream, *natsbus.OpsFeed) {
		nc, err := nats.Connect(ns.ClientURL(), nats.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		f, err := natsbus.StartOpsFeed(nc, js, natsbus.OpsFeedConfig{Partitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		f.CountAccepted(accepted.Load)
		return nc, js, f
	}
	var a1, a2 atomic.Int64
	nc, js, f1 := feed("one", &a1)
	_, _, f2 := feed("two", &a2)
	if err := natsbus.EnsureStreams(ctx, js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := natsbus.EnsurePartitionConsumers(ctx, js, 2, natsbus.ConsumerSettings{}); err != nil {
		t.Fatal(err)
	}
	a1.Store(3)
	a2.Store(5)
	for _, ev := range []string{
		`{"type":"order.confirmed","data":{"status":"confirmed"}}`,
		`{"type":"order.rejected","data":{"status":"rejected","reject_reason":"out_of_stock"}}`,
		`{"type":"order.rejected","data":{"status":"rejected"}}`,
	} {
		if err := nc.Publish("orders.events.order.x", []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "orders.cmd.1", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*natsbus.OpsFeed{f1, f2} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			tot := f.Totals()
			if tot.Accepted == 8 && tot.Ingresses == 2 && tot.Events["order.confirmed"] == 1 && tot.Events["order.rejected"] == 2 &&
				tot.Rejected["out_of_stock"] == 1 && tot.Rejected["unknown"] == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("totals %+v", tot)
			}
			time.Sleep(20 * time.Millisecond)
		}
		parts := f.Partitions(ctx)
		if len(parts) != 2 || parts[0].Err != nil || parts[1].Err != nil {
			t.Fatalf("partitions %+v", parts)
		}
		if parts[0].Pending != 0 || parts[1].Pending != 1 || parts[1].PinnedClient != "" {
			t.Errorf("partitions %+v, want one command pending on partition 1, no pin", parts)
		}
	}
	// A rate: one process accepts more.
	a1.Store(13)
	deadline := time.Now().Add(10 * time.Second)
	for f1.Totals().Accepted != 18 || f1.Totals().AcceptedPerSecond <= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("totals %+v, want 18 accepted at a positive rate", f1.Totals())
		}
		time.Sleep(20 * time.Millisecond)
	}
	f1.Close()
	f1.Close() // twice is harmless
}
