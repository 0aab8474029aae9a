package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/flashsale/orderd/pkg/natsbus"
)

// An atomic batch is stored whole, in order; the same batch again is
// refused whole (its messages are duplicates) and stores nothing.
func TestPublishAtomic(t *testing.T) {
	js, _ := startJS(t)
	ctx := context.Background()
	stream, err := js.Stream(ctx, natsbus.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	nc := js.Conn()
	msgs := make([]natsbus.Message, 500)
	for i := range msgs {
		msgs[i] = natsbus.Message{Subject: "orders.events.order.confirmed", Data: fmt.Appendf(nil, `{"n":%d}`, i), MsgID: fmt.Sprint("ev-", i)}
	}
	if err := natsbus.PublishAtomic(ctx, nc, msgs); err != nil {
		t.Fatal(err)
	}
	info, _ := stream.Info(ctx)
	if info.State.Msgs != 500 {
		t.Fatalf("%d messages stored, want 500", info.State.Msgs)
	}
	for _, seq := range []uint64{1, 250, 500} {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`{"n":%d}`, seq-1); string(m.Data) != want {
			t.Errorf("message %d is %s, want %s", seq, m.Data, want)
		}
	}
	err = natsbus.PublishAtomic(ctx, nc, msgs[100:200])
	if !errors.Is(err, natsbus.ErrBatchRefused) {
		t.Fatalf("republished batch: %v, want ErrBatchRefused", err)
	}
	info, _ = stream.Info(ctx)
	if info.State.Msgs != 500 {
		t.Errorf("%d messages after the refused batch, want 500", info.State.Msgs)
	}
	if err := natsbus.PublishAtomic(ctx, nc, make([]natsbus.Message, natsbus.MaxAtomicBatch+1)); err == nil {
		t.Error("an oversized batch was sent")
	}
}
