package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// Commands that wait for Redis.
//
// A command that brings a sold-out SKU's stock back from 0 (a restock, a
// cancel, a release) must delete the SKU's sold-out marker before it
// commits (pkg/redisstore's soldout.go). While Redis is down it cannot:
// ApplyBatch applies the rest of the batch and names those commands in
// BatchResult.Held. Their messages wait, and nothing else does:
//
//   - a message before its last delivery is Nak'ed with the usual growing
//     delay; its redelivery applies the held commands (and skips the ones
//     applied already);
//   - a message at its last delivery would become a dead letter if Nak'ed,
//     so the loop keeps it (InProgress every third of the ack wait) and
//     applies it again between pulls, every heldPause at first, then less
//     often, until Redis answers. The partition goes on meanwhile.
//
// When the loop stops, the messages it still keeps are Nak'ed at their
// last delivery: they become dead letters, recorded with the reason, to
// replay.

// Pauses between the attempts at the messages a loop keeps.
const (
	heldPause    = 250 * time.Millisecond
	heldMaxPause = 5 * time.Second
)

// waiting is the messages a partition loop keeps at their last delivery
// until Redis answers.
type waiting struct {
	items []*item
	why   error
	pause time.Duration // before the next attempt
	next  time.Time     // when it is due
	beat  func()        // stops the InProgress heartbeat of items
}

// splitHeld returns the items of which no command is in held, and those
// of which one is.
func splitHeld(items []*item, held []uuid.UUID) (done, waits []*item) {
	if len(held) == 0 {
		return items, nil
	}
	for _, it := range items {
		if slices.ContainsFunc(it.cmds, func(c order.Command) bool { return slices.Contains(held, c.ID) }) {
			waits = append(waits, it)
		} else {
			done = append(done, it)
		}
	}
	return done, waits
}

// await settles messages with commands held for the sold-out markers: a
// redelivery later, or, at the last delivery, kept by the loop.
func (l *partitionLoop) await(items []*item, why *postgres.ReopenError) {
	if len(items) == 0 {
		return
	}
	err := fmt.Errorf("commands wait for Redis: %w", why)
	l.log.Warn("sold-out markers unreachable: the commands that bring stock back wait, the rest is applied", "messages", len(items), "err", why)
	kept := false
	for _, it := range items {
		if it.delivered < uint64(l.w.cfg.MaxDeliver) {
			l.nakOne(it, err)
			continue
		}
		l.wait.items = append(l.wait.items, it)
		l.w.m.messages.WithLabelValues("hold").Inc()
		kept = true
	}
	if kept {
		l.wait.why = err
		if l.wait.pause == 0 {
			l.wait.pause = heldPause
		}
		l.wait.next = time.Now().Add(l.wait.pause)
		l.beatWaiting()
	}
}

// retryWaiting applies again the messages the loop keeps, if an attempt
// is due: those whose commands Redis still cannot take are kept again
// (await), with a longer pause.
func (l *partitionLoop) retryWaiting(stop, ctx context.Context) {
	if len(l.wait.items) == 0 || time.Now().Before(l.wait.next) {
		return
	}
	items, beat := l.wait.items, l.wait.beat
	l.wait.items, l.wait.beat = nil, nil
	l.wait.pause = min(2*l.wait.pause, heldMaxPause)
	// Their heartbeat goes on while they are applied (which may take the
	// ack wait when Redis does not answer): at their last delivery, a
	// lapse would make them dead letters.
	l.apply(stop, ctx, items)
	beat()
	if len(l.wait.items) == 0 {
		l.wait.pause = 0
	}
}

// beatWaiting (re)starts the heartbeat of the messages the loop keeps.
func (l *partitionLoop) beatWaiting() {
	if l.wait.beat != nil {
		l.wait.beat()
		l.wait.beat = nil
	}
	if len(l.wait.items) == 0 {
		return
	}
	msgs := make([]jetstream.Msg, len(l.wait.items))
	for i, it := range l.wait.items {
		msgs[i] = it.msg
	}
	l.wait.beat = l.keepAlive(msgs)
}

// releaseWaiting gives up the messages the loop keeps, when it stops.
func (l *partitionLoop) releaseWaiting() {
	items := l.wait.items
	l.wait.items = nil
	l.beatWaiting()
	if len(items) > 0 {
		l.nak(items, l.wait.why)
	}
}
