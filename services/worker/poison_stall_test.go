package worker

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// TestPoisonDoesNotStallItsPartition: a command whose processing always
// fails with an unknown error (not a recognised poison) arrives in the
// same batch as good commands of its partition, and more good commands
// queue behind it. The poison is delivered exactly MaxDeliver times and
// becomes a dead letter, and no more (not retried forever); every good
// command is decided, none becomes a dead letter with it, and those that
// queued behind it are decided before it reaches its dead letter (the
// partition does not wait on it). Before the fix, the batch was Nak'ed
// whole: the good commands came back with the poison each time and became
// dead letters with it after MaxDeliver.
func TestPoisonDoesNotStallItsPartition(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(0, 100, 0)
	doomed := e.checkout("poison", sku, 1)
	var first []order.Command
	for i := range 20 {
		first = append(first, e.checkout(fmt.Sprintf("with-%d", i), sku, 1))
	}
	w, poisonSeen := e.poisonedWorker(doomed.ID)
	// The poison first, then good commands, all queued before the worker
	// starts: its first batch holds them together.
	e.publishAsync(append([]order.Command{doomed}, first...))
	start := time.Now()
	e.start(w)
	var behind []order.Command
	for i := range 20 {
		behind = append(behind, e.checkout(fmt.Sprintf("behind-%d", i), sku, 1))
	}
	e.publishAsync(behind)

	e.waitFinal(orderIDs(behind), 10*time.Second)
	behindAt := time.Since(start)
	e.waitFinal(orderIDs(first), 20*time.Second)
	dls := e.waitDeadLetters(1, 30*time.Second)
	deadAt := time.Since(start)
	time.Sleep(3 * time.Second) // time for a delivery too many
	if dls = e.waitDeadLetters(1, time.Second); len(dls) != 1 {
		t.Fatalf("%d dead letters, want only the poison's: %+v", len(dls), dls)
	}
	d := dls[0]
	if d.Reason != postgres.DeadMaxDeliveries || d.Deliveries != 3 {
		t.Errorf("dead letter %s after %d deliveries, want %s after 3", d.Reason, d.Deliveries, postgres.DeadMaxDeliveries)
	}
	seen := poisonSeen()
	if seen > 6 { // each delivery: in a batch, then alone
		t.Errorf("the poison was tried %d times, want at most 2 x MaxDeliver = 6", seen)
	}
	for _, c := range append(first, behind...) {
		if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
			t.Errorf("good order %s is %q, want confirmed", c.Checkout.OrderID, st)
		}
	}
	if st, reason := e.status(doomed.Checkout.OrderID); st != order.StatusRejected || reason != order.RejectProcessingFailed {
		t.Errorf("the poison's order is %q %s, want rejected %s with its dead letter", st, reason, order.RejectProcessingFailed)
	}
	if got := e.stock(sku); got != (stock{60, 40}) {
		t.Errorf("stock %+v, want 40 sold, 60 left", got)
	}
	if behindAt >= deadAt {
		t.Errorf("the commands behind the poison were decided after %s, not before its dead letter (%s): the partition waited on it", behindAt, deadAt)
	}
	if n := e.workQueueMsgs(); n != 0 {
		t.Errorf("%d messages left in the work queue", n)
	}
	t.Logf("commands behind the poison decided after %s; the poison dead-lettered after %s", behindAt.Round(time.Millisecond), deadAt.Round(time.Millisecond))
}

// TestPoisonInAGroupCommitMessage: the ingress packs many buyers' commands
// into one message. When one of them always fails with an unknown error,
// the message is redelivered up to MaxDeliver times; at its last delivery
// the commands are applied one by one: the others are decided, only the
// poison becomes a dead letter (as a command), and the message is acked.
func TestPoisonInAGroupCommitMessage(t *testing.T) {
	e := newEnv(t, 2)
	sku := e.sku(0, 100, 0)
	doomed := e.checkout("poison", sku, 1)
	var goods []order.Command
	for i := range 5 {
		goods = append(goods, e.checkout(fmt.Sprintf("packed-%d", i), sku, 1))
	}
	w, poisonSeen := e.poisonedWorker(doomed.ID)
	e.start(w)
	data, err := order.EncodeEnvelope(append([]order.Command{goods[0], doomed}, goods[1:]...)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(t.Context(), order.Subject(0), data); err != nil {
		t.Fatal(err)
	}
	e.waitFinal(orderIDs(goods), 20*time.Second)
	dls := e.waitDeadLetters(1, 10*time.Second)
	time.Sleep(3 * time.Second)
	if dls = e.waitDeadLetters(1, time.Second); len(dls) != 1 {
		t.Fatalf("%d dead letters, want only the poison's: %+v", len(dls), dls)
	}
	if d := dls[0]; d.Reason != postgres.DeadPoisonCommand || d.Deliveries != 3 || d.SourceKey != "cmd-"+doomed.ID.String() {
		t.Errorf("dead letter %+v, want the poison command's after 3 deliveries", d)
	}
	seen := poisonSeen()
	if seen > 4 {
		t.Errorf("the poison was tried %d times: 3 deliveries and once alone at the last", seen)
	}
	for _, c := range goods {
		if st, _ := e.status(c.Checkout.OrderID); st != order.StatusConfirmed {
			t.Errorf("good order %s is %q, want confirmed", c.Checkout.OrderID, st)
		}
	}
	if n := e.workQueueMsgs(); n != 0 {
		t.Errorf("%d messages left in the work queue", n)
	}
}

// poisonedWorker returns a worker (MaxDeliver 3) whose every batch holding
// command doomed fails with an unknown error, and a function that tells
// how many batches held it.
func (e *env) poisonedWorker(doomed uuid.UUID) (*Worker, func() int) {
	var (
		mu   sync.Mutex
		seen int
	)
	w := e.worker("w", func(c *Config) { c.MaxDeliver = 3 })
	w.applyHook = func(_ int, cmds []order.Command) error {
		for _, c := range cmds {
			if c.ID == doomed {
				mu.Lock()
				seen++
				mu.Unlock()
				return errors.New("a failure that never ends")
			}
		}
		return nil
	}
	return w, func() int {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}
