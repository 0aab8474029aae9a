package worker

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// TestLagGauges: the queue depth, the pin, the outbox backlog and the
// unreplayed dead letters are sampled from the consumers and the database.
func TestLagGauges(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(1, 10, 0)
	w := e.worker("w")
	stop := e.start(w)
	c := e.checkout("u1", sku, 1)
	e.publish(1, c)
	e.waitFinal(orderIDs([]order.Command{c}), 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(w.m.partPinned.WithLabelValues("1")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("orderd_partition_pinned{partition=1} is not 1 on the worker that applies it")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if got := testutil.ToFloat64(w.m.partPinned.WithLabelValues("1")); got != 0 {
		t.Errorf("pinned %v after the worker stopped", got)
	}

	// Three commands wait, an outbox row waits, a dead letter waits.
	e.publish(1, e.checkout("u2", sku, 1), e.checkout("u3", sku, 1), e.checkout("u4", sku, 1))
	ctx := context.Background()
	if _, err := e.db.Exec(`INSERT INTO outbox (msg_id, subject, payload, created_at) VALUES ('x', 'orders.events.test', 'x', now() - interval '3 seconds')`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.db.RecordDeadLetter(ctx, &postgres.DeadLetter{SourceKey: "k", Subject: "orders.cmd.1", Partition: 1, Reason: postgres.DeadPoisonMessage, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	labels := []string{"0", "1"}
	w.sampleLag(ctx, make([]jetstream.Consumer, 2), labels)
	for p, want := range []float64{0, 3} {
		if got := testutil.ToFloat64(w.m.partPending.WithLabelValues(strconv.Itoa(p))); got != want {
			t.Errorf("partition %d pending %v, want %v", p, got, want)
		}
	}
	if got := testutil.ToFloat64(w.m.outboxPending); got != 1 {
		t.Errorf("outbox pending %v, want 1", got)
	}
	if got := testutil.ToFloat64(w.m.outboxAge); got < 2 {
		t.Errorf("outbox age %v, want at least 2s", got)
	}
	if got := testutil.ToFloat64(w.m.deadUnreplayed); got != 1 {
		t.Errorf("unreplayed dead letters %v, want 1", got)
	}
}
