package worker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// waitDeadLetters waits until the dead_letters table holds n rows and
// returns them, oldest first.
func (e *env) waitDeadLetters(n int, timeout time.Duration) []postgres.DeadLetter {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := e.db.DeadLetters(context.Background(), 0, 100)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(got) >= n {
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: %d dead letters, want %d", timeout, len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dlq reads every message of ORDER_DLQ.
func (e *env) dlq() []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.js.Stream(ctx, natsbus.DeadLetterStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	return out
}

func (e *env) workQueueMsgs() uint64 {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), natsbus.CommandStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestDeadLetterPoison: a message that is not an envelope and an invalid
// command packed with a good one become dead letters with their errors,
// in the table and on ORDER_DLQ, and the partition goes on.
func TestDeadLetterPoison(t *testing.T) {
	e := newEnv(t, 4)
	sku := e.sku(1, 10, 0)
	ctx := context.Background()
	e.start(e.worker("w"))
	if _, err := e.js.Publish(ctx, order.Subject(1), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	invalid := e.checkout("u1", sku, 1)
	invalid.Checkout.PaymentMethod = "barter"
	good := e.checkout("u2", sku, 1)
	mixed, _ := order.EncodeEnvelope(good, invalid)
	if _, err := e.js.Publish(ctx, order.Subject(1), mixed); err != nil {
		t.Fatal(err)
	}
	after := e.checkout("u3", sku, 1)
	e.publish(1, after)
	e.waitFinal([]uuid.UUID{good.Checkout.OrderID, after.Checkout.OrderID}, 10*time.Second)

	dls := e.waitDeadLetters(2, 10*time.Second)
	msg, cmd := dls[0], dls[1]
	if msg.Reason != postgres.DeadPoisonMessage || msg.Subject != "orders.cmd.1" || string(msg.Payload) != "not json" ||
		!strings.Contains(msg.LastError, "decode command envelope") || msg.StreamSeq == 0 || msg.Deliveries != 1 || msg.Partition != 1 {
		t.Errorf("poison message dead letter %+v", msg)
	}
	if cmd.Reason != postgres.DeadPoisonCommand || !strings.Contains(cmd.LastError, "payment method") {
		t.Errorf("poison command dead letter %+v", cmd)
	}
	cmds, err := order.DecodeEnvelope(cmd.Payload, 1, 4)
	if err == nil || len(cmds) != 0 {
		t.Errorf("the dropped command's envelope decodes: %v", err)
	}
	if !strings.Contains(string(cmd.Payload), invalid.ID.String()) || strings.Contains(string(cmd.Payload), good.ID.String()) {
		t.Errorf("the dropped command's envelope %s: want only the invalid command", cmd.Payload)
	}
	if n := e.workQueueMsgs(); n != 0 {
		t.Errorf("%d messages left in the work queue", n)
	}

	var copies []*jetstream.RawStreamMsg
	deadline := time.Now().Add(5 * time.Second)
	for len(copies) < 2 && time.Now().Before(deadline) {
		copies = e.dlq()
		time.Sleep(20 * time.Millisecond)
	}
	if len(copies) != 2 {
		t.Fatalf("%d messages on ORDER_DLQ, want 2", len(copies))
	}
	h := copies[0].Header
	if copies[0].Subject != "orders.dlq.1" || h.Get(natsbus.DLQReasonHeader) != postgres.DeadPoisonMessage ||
		h.Get(natsbus.DLQSubjectHeader) != "orders.cmd.1" || h.Get(natsbus.DLQStreamSeqHeader) != strconv.FormatUint(msg.StreamSeq, 10) ||
		h.Get(natsbus.DLQDeliveriesHeader) != "1" || string(copies[0].Data) != "not json" || h.Get(jetstream.MsgIDHeader) != "dlq-"+strconv.FormatUint(msg.StreamSeq, 10) {
		t.Errorf("ORDER_DLQ copy %s %v %q", copies[0].Subject, h, copies[0].Data)
	}
	if got := copies[1].Header.Get(natsbus.DLQReasonHeader); got != postgres.DeadPoisonCommand {
		t.Errorf("second copy's reason %q", got)
	}
}

// TestDeadLetterMaxDeliveries: a command whose processing keeps failing
// becomes a dead letter after MaxDeliver deliveries, with the error and
// the count, and the partition goes on.
func TestDeadLetterMaxDeliveries(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(0, 10, 0)
	doomed := e.checkout("u1", sku, 1)
	w := e.worker("w", func(c *Config) { c.MaxDeliver = 3 })
	w.applyHook = func(_ int, cmds []order.Command) error {
		for _, c := range cmds {
			if c.ID == doomed.ID {
				return errors.New("transient failure that never ends")
			}
		}
		return nil
	}
	e.start(w)
	e.publish(1, doomed)
	dls := e.waitDeadLetters(1, 20*time.Second)
	d := dls[0]
	if d.Reason != postgres.DeadMaxDeliveries || d.Deliveries != 3 || !strings.Contains(d.LastError, "never ends") ||
		!strings.Contains(string(d.Payload), doomed.ID.String()) {
		t.Errorf("dead letter %+v", d)
	}
	good := e.checkout("u2", sku, 1)
	e.publish(1, good)
	e.waitFinal([]uuid.UUID{good.Checkout.OrderID}, 10*time.Second)
	waitDrained(t, e, 0)
	if n := e.workQueueMsgs(); n != 0 {
		t.Errorf("%d messages left in the work queue", n)
	}
}

// TestDeadLetterAdvisory: a message its worker never settles (it crashed)
// is given up by the server after MaxDeliver; the MAX_DELIVERIES advisory
// makes it a dead letter and removes it from the work queue.
func TestDeadLetterAdvisory(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(0, 10, 0)
	ctx := context.Background()
	cons, err := natsbus.EnsurePartitionConsumers(ctx, e.js, 2, natsbus.ConsumerSettings{MaxDeliver: 2, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w := e.worker("w")
	dctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.deadLetters(dctx) }()
	t.Cleanup(func() { stop(); <-done })
	time.Sleep(100 * time.Millisecond) // the subscription is in place

	cmd := e.checkout("u1", sku, 1)
	e.publish(1, cmd)
	deliveries := 0
	deadline := time.Now().Add(20 * time.Second)
	for e.count(`SELECT count(*) FROM dead_letters`) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter after %d deliveries", deliveries)
		}
		// A worker that takes the message and dies: never settles it.
		b, err := cons[0].Fetch(1, jetstream.FetchMaxWait(1500*time.Millisecond), jetstream.FetchPriorityGroup(natsbus.PriorityGroup))
		if err != nil {
			t.Fatal(err)
		}
		for range b.Messages() {
			deliveries++
		}
	}
	dls := e.waitDeadLetters(1, 5*time.Second)
	if d := dls[0]; d.Reason != postgres.DeadMaxDeliveries || d.Deliveries != 2 || !strings.Contains(d.LastError, "never settled") ||
		!strings.Contains(string(d.Payload), cmd.ID.String()) || d.StreamSeq == 0 {
		t.Errorf("dead letter %+v", d)
	}
	deadline = time.Now().Add(5 * time.Second)
	for e.workQueueMsgs() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the dead message is still in the work queue")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if deliveries != 2 {
		t.Errorf("%d deliveries, want 2", deliveries)
	}
}

// TestDeadLetterReplay: a dead command replayed after its cause was fixed
// is applied once however often it is replayed, and replaying a command
// that was applied before changes nothing.
func TestDeadLetterReplay(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(1, 10, 0)
	ctx := context.Background()
	e.start(e.worker("w"))
	bad := e.checkout("u1", sku, 1)
	bad.Checkout.AddressID = uuid.New() // no such address: the partition drops it
	good := e.checkout("u2", sku, 1)
	data, _ := order.EncodeEnvelope(bad, good)
	if _, err := e.js.Publish(ctx, order.Subject(bad.Partition), data); err != nil {
		t.Fatal(err)
	}
	e.waitFinal([]uuid.UUID{good.Checkout.OrderID}, 10*time.Second)
	d := e.waitDeadLetters(1, 10*time.Second)[0]
	if d.Reason != postgres.DeadPoisonCommand || !strings.Contains(d.LastError, "address") {
		t.Fatalf("dead letter %+v", d)
	}
	if _, err := e.db.Exec(`INSERT INTO addresses (id, user_id, recipient, line1, city, postal_code, country)
		VALUES ($1, 'u1', 'R', 'L1', 'C', '1000', 'DE')`, bad.Checkout.AddressID); err != nil {
		t.Fatal(err)
	}
	pub := natsbus.NewPublisher(e.js)
	for range 2 {
		if err := pub.Replay(ctx, d.Subject, d.Payload, "replay-"+strconv.FormatInt(d.ID, 10)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFinal([]uuid.UUID{bad.Checkout.OrderID}, 10*time.Second)
	if st, _ := e.status(bad.Checkout.OrderID); st != order.StatusConfirmed {
		t.Errorf("replayed order %s", st)
	}
	// The good command again, as a replay would send it: applied before.
	again, _ := order.EncodeEnvelope(good)
	if err := pub.Replay(ctx, order.Subject(good.Partition), again, "replay-x"); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, e)
	if got := e.stock(sku); got != (stock{8, 2}) {
		t.Errorf("stock %+v, want 8 left and 2 sold", got)
	}
	if n := e.count(`SELECT count(*) FROM orders`); n != 2 {
		t.Errorf("%d orders, want 2", n)
	}
}

// TestDeadLetterSweep: a message the server gave up on while no worker
// listened to the advisories is found by the sweep (seen twice) and
// recorded.
func TestDeadLetterSweep(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(0, 10, 0)
	ctx := context.Background()
	cons, err := natsbus.EnsurePartitionConsumers(ctx, e.js, 2, natsbus.ConsumerSettings{MaxDeliver: 1, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.checkout("u1", sku, 1)
	e.publish(1, cmd)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, _ := cons[0].Info(ctx)
		if c.Delivered.Stream >= 1 && c.NumAckPending == 0 && c.NumPending == 0 {
			break // delivered once, never settled, not to be delivered again
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not give up on the message")
		}
		b, err := cons[0].Fetch(1, jetstream.FetchMaxWait(1500*time.Millisecond), jetstream.FetchPriorityGroup(natsbus.PriorityGroup))
		if err != nil {
			t.Fatal(err)
		}
		for range b.Messages() {
		}
	}
	w := e.worker("w")
	s := &deadSweep{}
	w.sweepDead(ctx, s)
	if n := e.count(`SELECT count(*) FROM dead_letters`); n != 0 {
		t.Fatalf("recorded after one sweep: %d", n)
	}
	w.sweepDead(ctx, s)
	d := e.waitDeadLetters(1, time.Second)[0]
	if d.Reason != postgres.DeadMaxDeliveries || !strings.Contains(string(d.Payload), cmd.ID.String()) {
		t.Errorf("dead letter %+v", d)
	}
	if n := e.workQueueMsgs(); n != 0 {
		t.Errorf("%d messages left in the work queue", n)
	}
}

// TestDeadLetterRejectsCheckout: a checkout that never gets applied ends
// rejected processing_failed when it becomes a dead letter, in the
// database, in the status cache and with its order.rejected event, having
// taken no stock. Replaying the dead letter once the cause is gone
// changes nothing: the order is decided.
func TestDeadLetterRejectsCheckout(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	sku := e.sku(0, 10, 0)
	doomed := e.checkout("u1", sku, 1)
	id := doomed.Checkout.OrderID
	var failing atomic.Bool
	failing.Store(true)
	w := e.worker("w", func(c *Config) { c.MaxDeliver = 3 })
	w.applyHook = func(_ int, cmds []order.Command) error {
		for _, c := range cmds {
			if c.ID == doomed.ID && failing.Load() {
				return errors.New("a failure that never ends")
			}
		}
		return nil
	}
	e.start(w)
	e.publish(1, doomed)
	d := e.waitDeadLetters(1, 20*time.Second)[0]
	e.waitFinal([]uuid.UUID{id}, 10*time.Second)
	wantRejectedOnce := func(when string) {
		t.Helper()
		if st, reason := e.status(id); st != order.StatusRejected || reason != order.RejectProcessingFailed {
			t.Errorf("%s: order %s %s, want rejected %s", when, st, reason, order.RejectProcessingFailed)
		}
		deadline := time.Now().Add(5 * time.Second)
		cached, err := e.rs.OrderStatus(ctx, id)
		for (err != nil || cached.Status != order.StatusRejected) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			cached, err = e.rs.OrderStatus(ctx, id)
		}
		if err != nil || cached.Status != order.StatusRejected || cached.RejectReason != order.RejectProcessingFailed {
			t.Errorf("%s: status cache %+v %v, want rejected %s", when, cached, err, order.RejectProcessingFailed)
		}
		evs := e.events()
		validateEvents(t, evs)
		if n := decisions(t, evs)[id.String()]; n != 1 {
			t.Errorf("%s: %d decision events, want 1", when, n)
		}
		if got := e.stock(sku); got != (stock{10, 0}) {
			t.Errorf("%s: stock %+v, want none taken", when, got)
		}
	}
	wantRejectedOnce("dead-lettered")

	failing.Store(false)
	if err := e.pub.Replay(ctx, d.Subject, d.Payload, "replay-"+strconv.FormatInt(d.ID, 10)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.db.MarkDeadLetterReplayed(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, e)
	wantRejectedOnce("replayed")
}

// TestDeadLetterOneCommandMessageOnce: a message of one command that can
// never be applied is one dead letter, not one for the command and one
// for its message.
func TestDeadLetterOneCommandMessageOnce(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(1, 10, 0)
	e.start(e.worker("w"))
	bad := e.checkout("u1", sku, 1)
	bad.Checkout.AddressID = uuid.New() // no such address: the partition drops it
	e.publish(1, bad)
	e.waitDeadLetters(1, 10*time.Second)
	good := e.checkout("u2", sku, 1)
	e.publish(1, good)
	e.waitFinal([]uuid.UUID{good.Checkout.OrderID}, 10*time.Second)
	waitQuiet(t, e)
	if dls := e.waitDeadLetters(1, time.Second); len(dls) != 1 {
		for _, d := range dls {
			t.Logf("dead letter %s %s", d.SourceKey, d.Reason)
		}
		t.Errorf("%d dead letters of one message of one command, want 1", len(dls))
	}
}

// TestDeadLetterNotAckedUnrecorded: a command dropped from a message
// (invalid, or refused by the partition) whose dead letter cannot be
// recorded leaves its message to be redelivered, not acked: once the
// database records dead letters again, it is one. The other commands of
// the message are applied once.
func TestDeadLetterNotAckedUnrecorded(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	sku := e.sku(1, 10, 0)
	if _, err := e.db.Exec(`
		CREATE FUNCTION refuse_dead_letters() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'dead letters refused by the test'; END $$;
		CREATE TRIGGER refuse_dead_letters BEFORE INSERT ON dead_letters FOR EACH ROW EXECUTE FUNCTION refuse_dead_letters();`); err != nil {
		t.Fatal(err)
	}
	e.start(e.worker("w"))
	invalid := e.checkout("u1", sku, 1)
	invalid.Checkout.PaymentMethod = "barter" // dropped when decoded
	refused := e.checkout("u2", sku, 1)
	refused.Checkout.AddressID = uuid.New() // dropped by the partition
	goods := []order.Command{e.checkout("u3", sku, 1), e.checkout("u4", sku, 1)}
	for i, bad := range []order.Command{invalid, refused} {
		data, _ := order.EncodeEnvelope(goods[i], bad)
		if _, err := e.js.Publish(ctx, order.Subject(1), data); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFinal(orderIDs(goods), 10*time.Second)
	time.Sleep(time.Second) // a delivery or two that cannot record
	if _, err := e.db.Exec(`DROP TRIGGER refuse_dead_letters ON dead_letters`); err != nil {
		t.Fatal(err)
	}
	dls := e.waitDeadLetters(2, 20*time.Second)
	keys := map[string]bool{}
	for _, d := range dls {
		keys[d.SourceKey] = true
	}
	if !keys["cmd-"+invalid.ID.String()] || !keys["cmd-"+refused.ID.String()] {
		t.Errorf("dead letters %v, want one per dropped command", keys)
	}
	waitQuiet(t, e)
	if n := e.workQueueMsgs(); n != 0 {
		t.Errorf("%d messages left in the work queue", n)
	}
	if got := e.stock(sku); got != (stock{8, 2}) {
		t.Errorf("stock %+v, want the two good orders' units taken once", got)
	}
}
