package natsbus_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

func TestPublishDeadLetter(t *testing.T) {
	t.Parallel()
	js, _ := startJS(t)
	ctx := context.Background()
	d := natsbus.DeadLetterMsg{Partition: 3, Subject: "orders.cmd.3", StreamSeq: 17, Payload: []byte("x"),
		Reason: "poison_message", Deliveries: 2, LastError: "line one\nline two", MsgID: "dlq-17"}
	for range 2 { // the second copy is a duplicate
		if err := natsbus.PublishDeadLetter(ctx, js, d); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, natsbus.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 1 || info.Config.Retention != jetstream.LimitsPolicy || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("ORDER_DLQ %+v, %v", info, err)
	}
	m, err := st.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{natsbus.DLQReasonHeader: "poison_message", natsbus.DLQDeliveriesHeader: "2", natsbus.DLQStreamSeqHeader: "17",
		natsbus.DLQSubjectHeader: "orders.cmd.3", natsbus.DLQErrorHeader: "line one line two"}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("header %s %q, want %q", k, got, v)
		}
	}
	if m.Subject != "orders.dlq.3" || string(m.Data) != "x" {
		t.Errorf("message %s %q", m.Subject, m.Data)
	}

	// Replay goes to command subjects only, once per message id.
	p := natsbus.NewPublisher(js)
	if err := p.Replay(ctx, "orders.events.x", []byte("x"), "replay-1"); err == nil {
		t.Error("replay to an event subject")
	}
	env, _ := order.EncodeEnvelope(restock(1))
	for range 2 {
		if err := p.Replay(ctx, "orders.cmd.0", env, "replay-1"); err != nil {
			t.Fatal(err)
		}
	}
	cs, _ := js.Stream(ctx, natsbus.CommandStream)
	if info, _ := cs.Info(ctx); info.State.Msgs != 1 {
		t.Errorf("%d commands after replaying twice, want 1", info.State.Msgs)
	}
	if err := natsbus.DeleteCommandMessage(ctx, js, 999); err != nil {
		t.Errorf("deleting a message that is gone: %v", err)
	}
}

func TestBatchPublisherMetrics(t *testing.T) {
	t.Parallel()
	js, _ := startJS(t)
	reg := prometheus.NewRegistry()
	bp := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, Registerer: reg})
	defer bp.Close()
	if err := bp.Publish(context.Background(), restock(1)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"orderd_publish_seconds", "orderd_publish_batch_commands"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
	// A second publisher on the registry shares the collectors.
	natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, Registerer: reg}).Close()
}
