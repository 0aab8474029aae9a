package natsbus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/order"
)

func startJS(t *testing.T) (jetstream.JetStream, func()) {
	t.Helper()
	s := natstest.Start(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return js, func() { s.Shutdown(); s.WaitForShutdown() }
}

func restock(partitions int) order.Command {
	return order.Command{
		ID: uuid.New(), Kind: order.KindRestock, Partition: 0, At: time.Now(),
		Restock: &order.Restock{SKUID: uuid.New(), Quantity: 1},
	}
}

// Concurrent commands for one partition share messages, and every command
// arrives exactly once.
func TestBatchPublisherGroupsCommands(t *testing.T) {
	js, _ := startJS(t)
	b := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, MaxBatch: 100, InFlight: 1})
	defer b.Close()

	const n = 2000
	sent := make(map[uuid.UUID]bool, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		cmd := restock(1)
		mu.Lock()
		sent[cmd.ID] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Publish(context.Background(), cmd); err != nil {
				t.Errorf("publish: %v", err)
			}
		}()
	}
	wg.Wait()

	ctx := context.Background()
	stream, err := js.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := stream.Info(ctx)
	msgs := int(info.State.Msgs)
	if msgs >= n || msgs == 0 {
		t.Errorf("%d commands took %d messages, want fewer messages than commands", n, msgs)
	}
	got := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := order.DecodeEnvelope(m.Data, 0, 1)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		for _, c := range cmds {
			if !sent[c.ID] {
				t.Errorf("command %s arrived twice or was never sent", c.ID)
			}
			delete(sent, c.ID)
			got++
		}
	}
	if got != n || len(sent) != 0 {
		t.Errorf("received %d commands, %d missing", got, len(sent))
	}
	t.Logf("%d commands in %d messages", n, msgs)
}

// With JetStream gone, Publish fails with EUNAVAILABLE within its deadline.
func TestBatchPublisherUnavailable(t *testing.T) {
	js, stop := startJS(t)
	b := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, Timeout: 500 * time.Millisecond})
	defer b.Close()
	stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := b.Publish(ctx, restock(1))
	if got := order.ErrorCode(err); got != order.EUNAVAILABLE {
		t.Fatalf("publish with the server down: code %q (%v), want %q", got, err, order.EUNAVAILABLE)
	}
}
