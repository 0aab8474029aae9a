package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
)

// Dead letters.
//
// A command message that is never applied ends in the dead_letters table
// (the source of truth of GET /v1/admin/dead-letters and its replay) and is
// copied to the ORDER_DLQ stream with its headers, for NATS tooling. Three
// ways lead there:
//
//   - The worker Terms a poison message (it cannot be decoded): it records
//     the message with the error first, then TermWithReason. A Term acks
//     the message in the work queue, which deletes it, so the TERMINATED
//     advisory that follows could no longer fetch it: the worker is the one
//     that knows the payload and the error.
//   - A message fails at its last delivery (MaxDeliver) for anything but a
//     database outage (those are held, not given up): the worker records it
//     with the error and Terms it, rather than Nak it into the server's
//     MAX_DELIVERIES path where the error would be lost.
//   - A message whose worker never settled it (crashed, hung) past
//     MaxDeliver: the server publishes a MAX_DELIVERIES advisory and keeps
//     the message in the work queue. One worker process (a queue group)
//     gets the advisory, fetches the message by sequence, records it and
//     deletes it from ORDER_CMDS.
//
// A command dropped alone from a good message (invalid, or refused by the
// database while the others were applied) is recorded as a one-command
// envelope; a message all of whose commands were recorded so is Term'd
// without a record of its own. Every record is keyed (source_key
// "seq-<stream seq>" or "cmd-<command id>", Nats-Msg-Id "dlq-<seq>" or
// "dlq-cmd-<id>"), so two paths or two processes recording one message
// make one dead letter.
//
// A message is settled (acked, Term'd, deleted) only after its dead
// letters are recorded; a record that fails leaves the message to be
// redelivered (its applied commands are skipped then). Recording a dead
// letter also decides its checkouts that no partition wrote: rejected
// processing_failed with their order.rejected events, in the same
// transaction (postgres.DB.RecordDead), then cached, so that no buyer's
// order stays pending behind a dead letter. A replay of the dead letter
// finds them decided and changes nothing.

// deadLetterTimeout bounds recording one dead letter.
const deadLetterTimeout = 10 * time.Second

// lastErrors remembers the last error of messages this process Nak'ed, by
// stream sequence, so that a MAX_DELIVERIES advisory handled here can say
// why. It is bounded: the oldest half goes when it is full.
type lastErrors struct {
	mu   sync.Mutex
	errs map[uint64]string
}

const maxLastErrors = 10000

func (l *lastErrors) put(seq uint64, err string) {
	if seq == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs = map[uint64]string{}
	}
	if len(l.errs) >= maxLastErrors {
		for k := range l.errs {
			delete(l.errs, k)
			if len(l.errs) < maxLastErrors/2 {
				break
			}
		}
	}
	l.errs[seq] = err
}

func (l *lastErrors) take(seq uint64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.errs[seq]
	delete(l.errs, seq)
	return e
}

// recordDead records d (deciding the orders of its checkouts), caches the
// orders it decided and copies it to ORDER_DLQ. The record must succeed
// (the caller otherwise leaves the message to be redelivered); the cache
// (retried in the background) and the copy are best effort.
func (w *Worker) recordDead(ctx context.Context, d postgres.DeadLetter, msgID string) error {
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	rec, err := w.d.DB.RecordDead(ctx, &d)
	if err != nil {
		return fmt.Errorf("record dead letter: %w", err)
	}
	id := rec.ID
	if rec.Created {
		w.m.deadLetters.WithLabelValues(d.Reason).Inc()
		w.log.Error("dead letter", "id", id, "reason", d.Reason, "subject", d.Subject, "stream_seq", d.StreamSeq, "deliveries", d.Deliveries, "err", d.LastError)
	}
	for _, o := range rec.Undecided {
		w.log.Error("dead letter's order left undecided: its checkout cannot be written", "id", id, "order", o)
	}
	w.deadDecided(ctx, id, rec.Decided)
	err = natsbus.PublishDeadLetter(ctx, w.d.JS, natsbus.DeadLetterMsg{
		Partition: d.Partition, Subject: d.Subject, StreamSeq: d.StreamSeq, Payload: d.Payload,
		Reason: d.Reason, Deliveries: uint64(d.Deliveries), LastError: d.LastError, MsgID: msgID,
	})
	if err != nil {
		w.log.Warn("dead letter recorded but not copied to ORDER_DLQ", "id", id, "err", err)
	}
	return nil
}

// deadCacheRetry bounds how long the status cache of the orders a dead
// letter decided is retried in the background.
const deadCacheRetry = 10 * time.Minute

// deadDecided counts, announces and caches the orders a dead letter's
// record decided.
func (w *Worker) deadDecided(ctx context.Context, id int64, res *postgres.BatchResult) {
	if res == nil || len(res.Orders) == 0 {
		return
	}
	w.count(res)
	w.wakeRelay()
	for _, o := range res.Orders {
		w.log.Warn("order rejected: its command is a dead letter", "dead_letter", id, "order", o.ID, "reason", o.RejectReason)
	}
	if err := w.cache(ctx, redisstore.NoQueue, res); err == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadCacheRetry)
		defer cancel()
		if err := retryUntil(ctx, 500*time.Millisecond, 10*time.Second, func() error { return w.cache(ctx, redisstore.NoQueue, res) }); err != nil {
			w.log.Error("status cache of orders a dead letter decided not updated", "dead_letter", id, "err", err)
		}
	}()
}

// deadMessage records the whole message of it as a dead letter.
func (l *partitionLoop) deadMessage(it *item, reason string, cause error) error {
	seq := uint64(0)
	if md, err := it.msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	key, msgID := "seq-"+strconv.FormatUint(seq, 10), "dlq-"+strconv.FormatUint(seq, 10)
	if seq == 0 {
		id := uuid.NewString()
		key, msgID = "msg-"+id, "dlq-msg-"+id
	}
	return l.w.recordDead(context.Background(), postgres.DeadLetter{
		SourceKey: key, Partition: l.p, Subject: it.msg.Subject(), StreamSeq: seq, Reason: reason,
		LastError: errorText(cause), Deliveries: int64(it.delivered), Payload: it.msg.Data(),
	}, msgID)
}

// deadCommand records one command dropped from it's message, alone in an
// envelope so that it can be replayed alone. If it cannot be recorded, it
// remembers why in it.unrecorded: the message is then redelivered instead
// of acked (ack), its other commands applied and skipped when it comes
// back.
func (l *partitionLoop) deadCommand(it *item, cmd order.Command, cause error) {
	err := l.w.recordDeadCommand(context.Background(), it, l.p, cmd, cause)
	if err != nil {
		l.log.Warn("dead command not recorded; its message will be redelivered", "command", cmd.ID, "err", err)
		it.unrecorded = err
	}
}

// recordDeadCommand records cmd, dropped from it's message, as a dead
// letter of its own (of partition p).
func (w *Worker) recordDeadCommand(ctx context.Context, it *item, p int, cmd order.Command, cause error) error {
	data, err := order.EncodeEnvelope(cmd)
	if err != nil {
		return fmt.Errorf("dead command %s: %w", cmd.ID, err)
	}
	seq := uint64(0)
	if md, err := it.msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	return w.recordDead(ctx, postgres.DeadLetter{
		SourceKey: "cmd-" + cmd.ID.String(), Partition: p, Subject: it.msg.Subject(), StreamSeq: seq,
		Reason: postgres.DeadPoisonCommand, LastError: errorText(cause), Deliveries: int64(it.delivered), Payload: data,
	}, "dlq-cmd-"+cmd.ID.String())
}

// termDead settles a message every command of which was dropped and
// recorded as a dead letter of its own: Term'd, with no record of the
// message (that would record its one command twice), or redelivered if a
// record failed.
func (l *partitionLoop) termDead(it *item, cause error) {
	if it.unrecorded != nil {
		l.nakOne(it, it.unrecorded)
		return
	}
	if err := it.msg.TermWithReason(termReason("every command is a dead letter", cause)); err != nil {
		l.log.Warn("term failed", "err", err)
	}
	l.w.m.messages.WithLabelValues("term").Inc()
}

// errorText is err's text, at most 2000 bytes.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 2000 {
		s = s[:2000]
	}
	return s
}

// termReason is the Term reason of a message: the error, cut to fit an
// advisory.
func termReason(why string, err error) string {
	r := fmt.Sprintf("%s: %v", why, err)
	if len(r) > 200 {
		r = r[:200]
	}
	return r
}

// deadLetters handles the consumers' MAX_DELIVERIES and MSG_TERMINATED
// advisories until ctx is done.
func (w *Worker) deadLetters(ctx context.Context) {
	if w.d.NC == nil {
		return
	}
	ch := make(chan natsbus.Advisory, 4096)
	subs, err := natsbus.SubscribeDeadLetterAdvisories(w.d.NC, func(a natsbus.Advisory) {
		select {
		case ch <- a:
		default:
			w.log.Error("dead letter advisory dropped: too many at once", "stream_seq", a.StreamSeq, "consumer", a.Consumer)
		}
	})
	if err != nil {
		w.log.Error("dead letter advisories not subscribed: exhausted commands stay in the work queue", "err", err)
		return
	}
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	sweep := &deadSweep{}
	t := time.NewTicker(deadSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.sweepDead(ctx, sweep)
		case a := <-ch:
			for attempt := 1; ; attempt++ {
				err := w.handleAdvisory(ctx, a)
				if err == nil || ctx.Err() != nil {
					break
				}
				if attempt == 5 {
					w.log.Error("dead letter advisory not handled; the message stays in the work queue", "stream_seq", a.StreamSeq, "err", err)
					break
				}
				w.log.Warn("dead letter advisory failed; retrying", "stream_seq", a.StreamSeq, "err", err, "attempt", attempt)
				sleep(ctx, time.Duration(attempt)*time.Second)
			}
		}
	}
}

// handleAdvisory records the message an advisory names, if it is still in
// ORDER_CMDS, and deletes it there. A terminated message is normally gone
// (a Term deletes it from the work queue) and was recorded by the worker
// that terminated it.
func (w *Worker) handleAdvisory(ctx context.Context, a natsbus.Advisory) error {
	p, ok := partitionOf(a.Consumer)
	if !ok || a.Stream != natsbus.CommandStream {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	msg, err := natsbus.CommandMessage(ctx, w.d.JS, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		if a.Terminated {
			w.lastErrs.take(a.StreamSeq)
		}
		return nil
	}
	if err != nil {
		return err
	}
	reason, lastErr := postgres.DeadMaxDeliveries, w.lastErrs.take(a.StreamSeq)
	if a.Terminated {
		reason, lastErr = postgres.DeadPoisonMessage, a.Reason
	}
	if lastErr == "" {
		lastErr = fmt.Sprintf("no error recorded: the message was delivered %d times and never settled (its worker crashed or timed out)", a.Deliveries)
	}
	err = w.recordDead(ctx, postgres.DeadLetter{
		SourceKey: "seq-" + strconv.FormatUint(a.StreamSeq, 10), Partition: p, Subject: msg.Subject, StreamSeq: a.StreamSeq,
		Reason: reason, LastError: lastErr, Deliveries: int64(a.Deliveries), Payload: msg.Data,
	}, "dlq-"+strconv.FormatUint(a.StreamSeq, 10))
	if err != nil {
		return err
	}
	return natsbus.DeleteCommandMessage(ctx, w.d.JS, a.StreamSeq)
}

// partitionOf parses a partition consumer's name, "part-<p>".
func partitionOf(consumer string) (int, bool) {
	s, ok := strings.CutPrefix(consumer, "part-")
	if !ok {
		return 0, false
	}
	p, err := strconv.Atoi(s)
	return p, err == nil && p >= 0
}

// deadSweepEvery is how often sweepDead looks for exhausted messages whose
// advisory nobody handled.
const deadSweepEvery = 30 * time.Second

// deadSweep finds exhausted messages that no advisory handler recorded (no
// worker was subscribed when the server gave up on them). In a work queue
// an acked or terminated message is deleted, so when a partition's
// consumer has nothing delivered and unacked (NumAckPending 0), a message
// still stored at or below the last delivered sequence is one the server
// stopped delivering. A candidate is recorded when two sweeps in a row see
// it, so that an ack whose delete is on its way is not mistaken for one.
// A partition that is never idle is not swept: its advisories are the
// path there.
type deadSweep struct {
	seen map[uint64]bool // candidates of the previous sweep
}

// sweepDead runs one sweep over every partition.
func (w *Worker) sweepDead(ctx context.Context, s *deadSweep) {
	ctx, cancel := context.WithTimeout(ctx, deadSweepEvery)
	defer cancel()
	st, err := w.d.JS.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		return
	}
	now := map[uint64]bool{}
	for p := range w.cfg.Partitions {
		c, err := w.d.JS.Consumer(ctx, natsbus.CommandStream, natsbus.PartitionConsumerName(p))
		if err != nil {
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			continue
		}
		if info.NumAckPending > 0 {
			continue
		}
		floor := info.Delivered.Stream
		for seq := uint64(1); seq <= floor && ctx.Err() == nil; seq++ {
			m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(order.Subject(p)))
			if err != nil || m.Sequence > floor {
				break
			}
			seq = m.Sequence
			now[seq] = true
			if !s.seen[seq] {
				continue
			}
			err = w.handleAdvisory(ctx, natsbus.Advisory{Stream: natsbus.CommandStream, Consumer: natsbus.PartitionConsumerName(p),
				StreamSeq: seq, Deliveries: uint64(max(info.Config.MaxDeliver, 0))})
			if err != nil {
				w.log.Warn("exhausted message not recorded", "stream_seq", seq, "err", err)
			}
		}
	}
	s.seen = now
}
