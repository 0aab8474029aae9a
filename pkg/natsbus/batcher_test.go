package natsbus_test

import (
	"context"
	"errors"
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
	js := connectJS(t, s.ClientURL())
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return js, func() { s.Shutdown(); s.WaitForShutdown() }
}

func connectJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// stallCommands makes JetStream stop answering command publishes, as a
// stuck server would: the command stream is deleted and a subscriber that
// never replies takes its subjects. Each message it swallows is sent on
// the returned channel; resume brings the stream back.
func stallCommands(t *testing.T, url string, js jetstream.JetStream) (swallowed <-chan struct{}, resume func()) {
	t.Helper()
	ctx := context.Background()
	if err := js.DeleteStream(ctx, natsbus.CommandStream); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Name("silent"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	got := make(chan struct{}, 100)
	sub, err := nc.Subscribe("orders.cmd.>", func(*nats.Msg) { got <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return got, func() {
		t.Helper()
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
		if err := natsbus.EnsureStreams(ctx, js, natsbus.StreamConfig{}); err != nil {
			t.Fatal(err)
		}
	}
}

// storedCommands returns the ids of the commands on the command stream.
func storedCommands(t *testing.T, js jetstream.JetStream) map[uuid.UUID]bool {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uuid.UUID]bool{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := order.DecodeEnvelope(m.Data, 0, 1)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		for _, c := range cmds {
			ids[c.ID] = true
		}
	}
	return ids
}

// A command whose caller gave up while it waited in the queue (behind a
// message JetStream is slow to acknowledge) is never sent: its caller was
// told it failed, and the ingress answered 503, so nothing of it may be
// stored later.
func TestBatchPublisherDropsAbandonedCommands(t *testing.T) {
	s := natstest.Start(t)
	js := connectJS(t, s.ClientURL())
	if err := natsbus.EnsureStreams(context.Background(), js, natsbus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	b := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, InFlight: 1, Timeout: 2 * time.Second})
	defer b.Close()
	swallowed, resume := stallCommands(t, s.ClientURL(), js)

	// The first command's message takes the partition's only slot and
	// waits for a PubAck that does not come; its caller gives up first.
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		first <- b.Publish(ctx, restock(1))
	}()
	<-swallowed

	// Queued behind it, a command whose caller gives up.
	abandoned := restock(1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := b.Publish(ctx, abandoned)
	if order.ErrorCode(err) != order.EUNAVAILABLE || !errors.Is(err, natsbus.ErrNotPublished) {
		t.Fatalf("publish that gave up while queued: %v, want EUNAVAILABLE and ErrNotPublished", err)
	}
	// The first one's message was sent: whether it is stored is unknown.
	if err := <-first; order.ErrorCode(err) != order.EUNAVAILABLE || errors.Is(err, natsbus.ErrNotPublished) {
		t.Errorf("publish that gave up while its message was out: %v, want EUNAVAILABLE, not ErrNotPublished", err)
	}

	// JetStream recovers; the first message times out, and the queue
	// moves on. A later command is stored, and the abandoned one not.
	resume()
	last := restock(1)
	if err := b.Publish(context.Background(), last); err != nil {
		t.Fatalf("publish after the stall: %v", err)
	}
	stored := storedCommands(t, js)
	if !stored[last.ID] {
		t.Fatalf("the last command is not on the stream: %v", stored)
	}
	if stored[abandoned.ID] {
		t.Errorf("the command whose caller gave up (answered EUNAVAILABLE) was sent later and stored")
	}
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
