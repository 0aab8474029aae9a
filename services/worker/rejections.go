package worker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
)

// Orders the ingress decided itself.
//
// The ingress rejects a checkout out_of_stock on its own when a SKU of it
// is marked sold out (pkg/redisstore's soldout.go) and publishes a record
// of that decision to order.IngressSubject. Every worker process pulls
// that subject's consumer (not pinned: the records move no stock) and
// writes the orders, their lines and their order.rejected events in one
// transaction per batch (postgres.DB.RecordRejections), then caches them
// and wakes the waiting clients as a partition does. The errors settle by
// the partitions' table (settle.go).

// markers adapts the Redis store to postgres.SoldOutMarks.
type markers struct{ r *redisstore.Store }

func (m markers) Reopen(ctx context.Context, vs []order.SKUVersion) error {
	return m.r.Reopen(ctx, vs)
}

func (m markers) MarkSoldOut(ctx context.Context, vs []order.SKUVersion) (int, error) {
	return m.r.MarkSoldOut(ctx, vs)
}

// soldOutMarks returns what keeps the ingress's sold-out markers true, for
// the partitions' configuration.
func soldOutMarks(r *redisstore.Store) postgres.SoldOutMarks {
	if r == nil {
		return nil
	}
	return markers{r}
}

// recordRejections pulls the ingress decisions' consumer until ctx is done,
// then finishes what its last pull brought.
func (w *Worker) recordRejections(ctx context.Context) {
	log := w.log.With("consumer", natsbus.IngressConsumerName)
	backoff := 100 * time.Millisecond
	var cons jetstream.Consumer
	for cons == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := natsbus.EnsureIngressConsumer(cctx, w.d.JS, natsbus.ConsumerSettings{BatchSize: w.cfg.BatchSize})
		cancel()
		if err == nil {
			cons = c
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("cannot create the consumer; retrying", "err", err)
		sleep(ctx, backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
	work := context.WithoutCancel(ctx)
	backoff = 100 * time.Millisecond
	for ctx.Err() == nil {
		batch, err := cons.Fetch(w.cfg.BatchSize, jetstream.FetchMaxWait(w.fetchWait))
		if err != nil {
			log.Debug("pull failed", "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		ch := batch.Messages()
		for m := range ch {
			w.recordMessages(work, log, gatherReady(m, ch))
		}
	}
}

// recordMessages decodes msgs, Terms the poison ones and records the rest
// in one transaction.
func (w *Worker) recordMessages(ctx context.Context, log *slog.Logger, msgs []jetstream.Msg) {
	stop := inProgress(msgs, natsbus.IngressAckWait/3)
	defer stop()
	var items []*item
	for _, m := range msgs {
		it := &item{msg: m, delivered: 1}
		if md, err := m.Metadata(); err == nil {
			it.delivered = md.NumDelivered
		}
		cmds, err := order.DecodeIngressEnvelope(m.Data(), w.cfg.Partitions)
		if err != nil {
			w.deadRecordMessage(ctx, log, it, &decodeError{err})
			continue
		}
		it.cmds = cmds
		items = append(items, it)
	}
	if len(items) > 0 {
		w.recordItems(ctx, log, items)
	}
}

// recordItems records the commands of items in one transaction and
// settles the messages.
func (w *Worker) recordItems(ctx context.Context, log *slog.Logger, items []*item) {
	var cmds []order.Command
	for _, it := range items {
		cmds = append(cmds, it.cmds...)
	}
	res, err := w.recordRetrying(ctx, cmds)
	act, why := settleAction(err)
	var pe *postgres.PoisonError
	switch {
	case act == actAck:
		w.recorded(ctx, log, res)
		for _, it := range items {
			w.ackRecord(log, it)
		}
	case act == actTerm && errors.As(err, &pe):
		var rest []*item
		for _, it := range items {
			if cmd, ok := it.drop(pe.CommandID); ok {
				w.deadRecordCommand(ctx, log, it, cmd, err)
				if len(it.cmds) == 0 {
					w.ackRecord(log, it)
					continue
				}
			}
			rest = append(rest, it)
		}
		if len(rest) > 0 {
			w.recordItems(ctx, log, rest)
		}
	case act == actSplit || (act == actRetry && len(cmds) > 1):
		// A row refused, unknown which: one command at a time.
		for _, it := range items {
			w.recordEach(ctx, log, it)
		}
	default:
		log.Warn("ingress decisions not recorded; redelivering later", "why", why, "err", err, "messages", len(items))
		for _, it := range items {
			w.nakRecord(log, it)
		}
	}
}

// inProgress tells JetStream every period that msgs are being worked on,
// until the returned function is called.
func inProgress(msgs []jetstream.Msg, period time.Duration) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					m.InProgress()
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// recordEach records the commands of one message one at a time: those
// refused alone become dead letters, and the message is acked once every
// command is recorded or dropped (a recorded one is skipped if it comes
// back).
func (w *Worker) recordEach(ctx context.Context, log *slog.Logger, it *item) {
	for _, c := range it.cmds {
		res, err := w.recordRetrying(ctx, []order.Command{c})
		switch act, _ := settleAction(err); act {
		case actAck:
			w.recorded(ctx, log, res)
		case actTerm, actSplit:
			w.deadRecordCommand(ctx, log, it, c, err)
		default:
			log.Warn("ingress decision not recorded; redelivering later", "command", c.ID, "err", err)
			w.nakRecord(log, it)
			return
		}
	}
	w.ackRecord(log, it)
}

// recordRetrying records cmds, again at once after a conflict with
// another writer of the same orders.
func (w *Worker) recordRetrying(ctx context.Context, cmds []order.Command) (*postgres.BatchResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := w.d.DB.RecordRejections(ctx, cmds)
		if act, _ := settleAction(err); act == actRetry && attempt < maxConflictRetries {
			w.m.conflicts.Inc()
			time.Sleep(time.Duration(attempt) * time.Millisecond)
			continue
		}
		return res, err
	}
}

// recorded counts, caches and announces what a committed batch of records
// wrote. The ingress cached each rejection already; this puts the stored
// order there (and, for an order whose checkout reached its partition
// first, the partition's decision).
func (w *Worker) recorded(ctx context.Context, log *slog.Logger, res *postgres.BatchResult) {
	w.count(res)
	if err := w.d.Redis.ApplyDecisions(ctx, res.Orders, nil); err != nil {
		log.Warn("status cache update after recording ingress decisions failed; the ingress cached them", "err", err)
	} else if w.d.NC != nil {
		if err := natsbus.NotifyStatus(w.d.NC, res.Orders); err != nil {
			log.Debug("status note not sent", "err", err)
		}
	}
	if res.Outbox > 0 {
		w.wakeRelay()
	}
}

func (w *Worker) ackRecord(log *slog.Logger, it *item) {
	if it.unrecorded != nil {
		w.nakRecord(log, it) // a dropped command's dead letter is not recorded yet
		return
	}
	if err := it.msg.Ack(); err != nil {
		log.Warn("ack failed", "err", err) // recorded: a redelivery is skipped
	}
	w.m.messages.WithLabelValues("ack").Inc()
}

func (w *Worker) nakRecord(log *slog.Logger, it *item) {
	if err := it.msg.NakWithDelay(nakDelay(it.delivered)); err != nil {
		log.Warn("nak failed", "err", err)
	}
	w.m.messages.WithLabelValues("nak").Inc()
}

// deadRecordMessage records a message that is not a valid envelope of
// ingress decisions as a dead letter and Terms it (or Naks it if the dead
// letter could not be recorded).
func (w *Worker) deadRecordMessage(ctx context.Context, log *slog.Logger, it *item, cause error) {
	seq := uint64(0)
	if md, err := it.msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	s := strconv.FormatUint(seq, 10)
	err := w.recordDead(ctx, postgres.DeadLetter{
		SourceKey: "seq-" + s, Subject: it.msg.Subject(), StreamSeq: seq, Reason: postgres.DeadPoisonMessage,
		LastError: errorText(cause), Deliveries: int64(it.delivered), Payload: it.msg.Data(),
	}, "dlq-"+s)
	if err != nil {
		log.Warn("poison message not recorded as a dead letter; redelivering it", "err", err)
		w.nakRecord(log, it)
		return
	}
	log.Error("ingress decisions message dropped", "reason", cause, "stream_seq", seq)
	if err := it.msg.TermWithReason(termReason("poison message", cause)); err != nil {
		log.Warn("term failed", "err", err)
	}
	w.m.messages.WithLabelValues("term").Inc()
}

// deadRecordCommand records one command dropped from it's message as a
// dead letter of its own.
func (w *Worker) deadRecordCommand(ctx context.Context, log *slog.Logger, it *item, cmd order.Command, cause error) {
	log.Error("ingress decision dropped", "reason", cause, "command", cmd.ID)
	w.m.messages.WithLabelValues("drop_command").Inc()
	if err := w.recordDeadCommand(ctx, it, cmd.Partition, cmd, cause); err != nil {
		log.Warn("dead ingress decision not recorded; its message will be redelivered", "command", cmd.ID, "err", err)
		it.unrecorded = err
	}
}
