package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// maxConflictRetries bounds how often a batch is applied again at once
// after ErrBatchConflict before its messages are Nak'ed (redelivered later,
// never rejected).
const maxConflictRetries = 20

// partitionLoop pulls one partition's consumer and applies what it gets.
type partitionLoop struct {
	w     *Worker
	p     int
	cons  jetstream.Consumer
	log   *slog.Logger
	label string

	pinID   string  // the Nats-Pin-Id of the last message: this process holds the pin
	avgCmds float64 // moving average of commands per message, to size pulls
	dbDown  bool    // the last batch failed because the database was unreachable
	exp     expiry  // the sweep of orders whose payment hold passed (expiry.go)
	wait    waiting // messages at their last delivery whose commands wait for Redis (held.go)
}

// item is one fetched message and its commands.
type item struct {
	msg       jetstream.Msg
	cmds      []order.Command
	delivered uint64
	// unrecorded is why a command dropped from the message could not be
	// recorded as a dead letter: the message is redelivered, not acked
	// (deadletter.go).
	unrecorded error
}

func newPartitionLoop(w *Worker, p int, c jetstream.Consumer) *partitionLoop {
	return &partitionLoop{w: w, p: p, cons: c, log: w.log.With("partition", p), label: strconv.Itoa(p), avgCmds: 1}
}

// fetchSize is how many messages to pull so that they hold about one
// batch of commands: the ingress packs several commands into a message
// under load.
func (l *partitionLoop) fetchSize() int {
	return min(max(int(float64(l.w.cfg.BatchSize)/l.avgCmds), 1), l.w.cfg.BatchSize)
}

// run pulls until ctx is done, then finishes what the last pull brings,
// and unpins the partition if this process holds it.
func (l *partitionLoop) run(ctx context.Context) {
	// The work of a pull completes even when ctx ends: a drain finishes the
	// in-flight batch and acks it.
	work := context.WithoutCancel(ctx)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		batch, err := l.cons.Fetch(l.fetchSize(), jetstream.FetchMaxWait(l.w.fetchWait), jetstream.FetchPriorityGroup(natsbus.PriorityGroup))
		if err != nil {
			l.log.Debug("pull failed", "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		l.consume(ctx, work, batch)
		l.retryWaiting(ctx, work)
		l.expire(ctx)
		if l.dbDown {
			// This process cannot reach the database: give the partition
			// to a worker that may, and stay out of the way for a pin TTL.
			l.dbDown = false
			l.unpin()
			l.log.Warn("database unreachable: partition handed over", "pause", l.w.cfg.PinnedTTL)
			sleep(ctx, l.w.cfg.PinnedTTL)
			continue
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil {
			if errors.Is(err, jetstream.ErrPinIDMismatch) {
				l.log.Info("partition pinned to another worker", "err", err)
				l.pinID = ""
				l.exp.notPinned = true
				l.w.setPin(l.p, "")
			} else {
				l.log.Debug("pull ended", "err", err)
				sleep(ctx, 100*time.Millisecond)
			}
		}
	}
	l.releaseWaiting()
	l.unpin()
}

// unpin releases the partition's pin if this process holds it.
func (l *partitionLoop) unpin() {
	uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := natsbus.Unpin(uctx, l.w.d.JS, l.p, l.pinID); err != nil {
		l.log.Warn("unpin failed; the partition moves when the pin expires", "err", err)
	} else if l.pinID != "" {
		l.log.Info("partition unpinned")
	}
	l.pinID = ""
	l.w.setPin(l.p, "")
}

// consume applies the messages of one pull as they arrive: everything
// already delivered goes into the next transaction, so batches grow with
// the load (group commit) without waiting for a full batch.
func (l *partitionLoop) consume(stop, work context.Context, batch jetstream.MessageBatch) {
	ch := batch.Messages()
	for {
		m, ok := <-ch
		if !ok {
			return
		}
		l.process(stop, work, gatherReady(m, ch))
	}
}

// gatherReady returns first and the messages already waiting in ch behind
// it, without waiting for more: what one batch applies together.
func gatherReady(first jetstream.Msg, ch <-chan jetstream.Msg) []jetstream.Msg {
	msgs := []jetstream.Msg{first}
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return msgs
			}
			msgs = append(msgs, m)
		default:
			return msgs
		}
	}
}

// process decodes msgs, Terms the poison ones, and applies the rest in
// transactions of up to BatchSize commands.
func (l *partitionLoop) process(stop, work context.Context, msgs []jetstream.Msg) {
	stopBeat := l.keepAlive(msgs)
	defer stopBeat()
	var items []*item
	for _, m := range msgs {
		if pin := m.Headers().Get("Nats-Pin-Id"); pin != "" {
			l.pinID = pin
			l.exp.notPinned = false
			l.w.setPin(l.p, pin)
		}
		it := &item{msg: m, delivered: 1}
		if md, err := m.Metadata(); err == nil {
			it.delivered = md.NumDelivered
		}
		cmds, err := order.DecodeEnvelope(m.Data(), l.p, l.w.cfg.Partitions)
		if err != nil {
			// One invalid command must not take the other buyers of its
			// message with it: keep the valid ones if the envelope parses.
			var dropped []droppedCommand
			if cmds, dropped = salvage(m.Data(), l.p, l.w.cfg.Partitions); len(cmds) == 0 {
				l.settle([]*item{it}, &decodeError{err})
				continue
			}
			for _, d := range dropped {
				l.log.Error("command dropped", "reason", &decodeError{d.err}, "subject", m.Subject())
				l.w.m.messages.WithLabelValues("drop_command").Inc()
				l.deadCommand(it, d.cmd, &decodeError{d.err})
			}
		}
		it.cmds = cmds
		l.avgCmds = 0.8*l.avgCmds + 0.2*float64(len(cmds))
		items = append(items, it)
	}
	for len(items) > 0 {
		n, size := 0, 0
		for n < len(items) && (n == 0 || size+len(items[n].cmds) <= l.w.cfg.BatchSize) {
			size += len(items[n].cmds)
			n++
		}
		l.apply(stop, work, items[:n])
		items = items[n:]
	}
}

// droppedCommand is an invalid command of an envelope and why.
type droppedCommand struct {
	cmd order.Command
	err error
}

// salvage returns the valid commands of an envelope that failed
// order.DecodeEnvelope, and the other ones with why each is invalid; none if
// the envelope itself is malformed.
func salvage(data []byte, p, n int) ([]order.Command, []droppedCommand) {
	var env order.Envelope
	if err := json.Unmarshal(data, &env); err != nil || len(env.Commands) > order.MaxEnvelopeCommands {
		return nil, nil
	}
	var ok []order.Command
	var bad []droppedCommand
	for i := range env.Commands {
		if err := env.Commands[i].Validate(p, n); err != nil {
			bad = append(bad, droppedCommand{env.Commands[i], err})
			continue
		}
		ok = append(ok, env.Commands[i])
	}
	return ok, bad
}

// apply applies items in one transaction and settles them by the table.
func (l *partitionLoop) apply(stop, ctx context.Context, items []*item) {
	var cmds []order.Command
	for _, it := range items {
		cmds = append(cmds, it.cmds...)
	}
	start := time.Now()
	res, err := l.applyRetrying(stop, ctx, items, cmds)
	l.w.m.txSeconds.WithLabelValues(l.label).Observe(time.Since(start).Seconds())
	if err != nil {
		act, _ := settleAction(err)
		var pe *postgres.PoisonError
		switch {
		case act == actTerm && errors.As(err, &pe):
			// Drop the command (not its message: the ingress packs many
			// buyers' commands into one) and apply the rest.
			var rest []*item
			for _, it := range items {
				if cmd, ok := it.drop(pe.CommandID); ok {
					l.log.Error("command dropped", "reason", err, "command", pe.CommandID, "subject", it.msg.Subject())
					l.w.m.messages.WithLabelValues("drop_command").Inc()
					l.deadCommand(it, cmd, err)
					if len(it.cmds) == 0 {
						l.termDead(it, err)
						continue
					}
				}
				rest = append(rest, it)
			}
			if len(rest) > 0 {
				l.apply(stop, ctx, rest)
			}
			return
		case act == actSplit && len(items) > 1:
			l.log.Warn("a constraint refused the batch; applying its messages one by one", "err", err, "messages", len(items))
			for _, it := range items {
				l.apply(stop, ctx, []*item{it})
			}
			return
		case act == actSplit && len(items[0].cmds) > 1:
			l.applyEach(stop, ctx, items[0])
			return
		case act == actNak && !holdable(err) && ctx.Err() == nil && len(items) > 1:
			// An unknown failure: one message may be its cause. Alone, the
			// others go through, and only a failing one is redelivered and,
			// after MaxDeliver, dead-lettered: Nak'ed together, they would
			// come back together and share its fate.
			l.log.Warn("batch failed; applying its messages one by one", "err", err, "messages", len(items))
			for _, it := range items {
				l.apply(stop, ctx, []*item{it})
			}
			return
		case act == actNak && !holdable(err) && ctx.Err() == nil && len(items[0].cmds) > 1 &&
			items[0].delivered >= uint64(l.w.cfg.MaxDeliver):
			// A message of many buyers' commands (group commit) at its last
			// delivery: apply them one by one, and dead-letter only those
			// that still fail.
			l.applyEach(stop, ctx, items[0])
			return
		}
		l.settle(items, err)
		return
	}
	l.w.m.batchCommands.WithLabelValues(l.label).Observe(float64(len(cmds)))
	l.w.count(res)
	// The status cache first, then the relay: a client woken by an event
	// must not read an older status from the cache.
	cacheErr := l.w.cache(ctx, l.p, res)
	if res.Outbox > 0 {
		l.w.wakeRelay()
	}
	// Messages with commands held for the sold-out markers are applied
	// again later; the others are done.
	items, held := splitHeld(items, res.Held)
	l.await(held, res.HeldErr)
	if err := cacheErr; err != nil {
		// Committed: a redelivery skips the commands and caches again.
		// A message at its last delivery has none to come: it is acked,
		// and its decisions are cached in the background once Redis
		// answers, as the sweeps' are.
		l.log.Warn("status cache update failed after commit", "err", err)
		var again []*item
		last := false
		for _, it := range items {
			if it.delivered < uint64(l.w.cfg.MaxDeliver) {
				again = append(again, it)
			} else {
				last = true
				l.ack(it)
			}
		}
		if last {
			l.w.cacheLater(ctx, l.p, res)
		}
		l.nak(again, err)
		return
	}
	for _, it := range items {
		l.ack(it)
	}
	if res.Skipped > 0 {
		l.log.Debug("redelivered commands skipped", "skipped", res.Skipped)
	}
}

// applyRetrying applies cmds, again at once after a conflict with another
// writer, and again and again while the database is down if a message is
// at its last delivery (a Nak would make it a dead letter). stop ends the
// holding.
func (l *partitionLoop) applyRetrying(stop, ctx context.Context, items []*item, cmds []order.Command) (*postgres.BatchResult, error) {
	last := false
	for _, it := range items {
		last = last || it.delivered >= uint64(l.w.cfg.MaxDeliver)
	}
	for attempt := 1; ; attempt++ {
		res, err := l.w.applyBatch(ctx, l.p, cmds)
		act, _ := settleAction(err)
		switch {
		case act == actRetry && attempt < maxConflictRetries:
			l.w.m.conflicts.Inc()
			l.log.Debug("batch conflicted with another writer; applying it again", "attempt", attempt, "err", err)
			time.Sleep(time.Duration(rand.IntN(5*attempt)+1) * time.Millisecond)
			continue
		case act == actNak && last && holdable(err) && stop.Err() == nil:
			l.log.Warn("database unavailable at a command's last delivery; holding the batch", "err", err, "attempt", attempt)
			sleep(stop, min(time.Duration(attempt)*time.Second, 5*time.Second))
			continue
		}
		return res, err
	}
}

// drop removes the command id from it and returns it, reporting whether
// it held it.
func (it *item) drop(id uuid.UUID) (order.Command, bool) {
	for i, c := range it.cmds {
		if c.ID == id {
			it.cmds = slices.Delete(slices.Clone(it.cmds), i, i+1)
			return c, true
		}
	}
	return order.Command{}, false
}

// applyEach applies the commands of one message one at a time, after a
// constraint refused them together: the ones refused alone are dropped,
// the others applied, and the message acked. A command applied before a
// failure is skipped when the message comes back.
func (l *partitionLoop) applyEach(stop, ctx context.Context, it *item) {
	l.log.Warn("a constraint refused a message; applying its commands one by one", "commands", len(it.cmds))
	var held *postgres.ReopenError
	for _, c := range it.cmds {
		res, err := l.applyRetrying(stop, ctx, []*item{it}, []order.Command{c})
		switch act, _ := settleAction(err); act {
		case actAck:
			if len(res.Held) > 0 {
				held = res.HeldErr // applied again with its message
			}
			l.w.count(res)
			cacheErr := l.w.cache(ctx, l.p, res)
			if res.Outbox > 0 {
				l.w.wakeRelay()
			}
			if cacheErr != nil {
				// The message is acked below: no redelivery will cache it.
				l.log.Warn("status cache update failed after commit; retrying in the background", "err", cacheErr)
				l.w.cacheLater(ctx, l.p, res)
			}
		case actTerm, actSplit:
			l.log.Error("command dropped", "reason", err, "command", c.ID, "subject", it.msg.Subject())
			l.w.m.messages.WithLabelValues("drop_command").Inc()
			l.deadCommand(it, c, err)
		case actNak:
			if holdable(err) || ctx.Err() != nil || it.delivered < uint64(l.w.cfg.MaxDeliver) {
				l.settle([]*item{it}, err)
				return
			}
			// Its last delivery, and it alone fails: its dead letter, not
			// its message's (the others' commands are applied).
			l.log.Error("command failed at its message's last delivery: it becomes a dead letter", "err", err, "command", c.ID, "subject", it.msg.Subject())
			l.w.m.messages.WithLabelValues("drop_command").Inc()
			l.deadCommand(it, c, err)
		default:
			l.settle([]*item{it}, err)
			return
		}
	}
	if held != nil {
		l.await([]*item{it}, held)
		return
	}
	l.ack(it)
}

// settle Terms or Naks items for err, by the table.
func (l *partitionLoop) settle(items []*item, err error) {
	act, why := settleAction(err)
	switch act {
	case actTerm:
		for _, it := range items {
			reason := termReason(why, err)
			l.log.Error("command message dropped", "reason", reason, "subject", it.msg.Subject(), "delivered", it.delivered)
			if derr := l.deadMessage(it, postgres.DeadPoisonMessage, err); derr != nil {
				// Not recorded: leave it to a later delivery rather than lose it.
				l.log.Warn("poison message not recorded as a dead letter; redelivering it", "err", derr)
				l.nakOne(it, err)
				continue
			}
			if terr := it.msg.TermWithReason(reason); terr != nil {
				l.log.Warn("term failed", "err", terr)
			}
			l.w.m.messages.WithLabelValues("term").Inc()
		}
	case actAck:
		for _, it := range items {
			l.ack(it)
		}
	default: // nak, or retry and split exhausted
		l.log.Warn("batch failed; redelivering later", "why", why, "err", err, "messages", len(items))
		l.nak(items, err)
	}
}

func (l *partitionLoop) ack(it *item) {
	if it.unrecorded != nil {
		// Applied, but a dropped command's dead letter is not recorded:
		// redelivered, the message skips what was applied and tries again.
		l.nakOne(it, it.unrecorded)
		return
	}
	if err := it.msg.Ack(); err != nil {
		// Applied: a redelivery is skipped.
		l.log.Warn("ack failed", "err", err)
	}
	l.w.m.messages.WithLabelValues("ack").Inc()
}

func (l *partitionLoop) nak(items []*item, err error) {
	if holdable(err) {
		l.dbDown = true
	}
	for _, it := range items {
		if it.delivered >= uint64(l.w.cfg.MaxDeliver) && !holdable(err) {
			l.log.Error("command message failed at its last delivery: it becomes a dead letter", "err", err, "subject", it.msg.Subject())
			if derr := l.deadMessage(it, postgres.DeadMaxDeliveries, err); derr == nil {
				if terr := it.msg.TermWithReason(termReason("max deliveries", err)); terr != nil {
					l.log.Warn("term failed", "err", terr)
				}
				l.w.m.messages.WithLabelValues("term").Inc()
				continue
			} else {
				l.log.Warn("dead letter not recorded; the server's advisory will", "err", derr)
			}
		}
		l.nakOne(it, err)
	}
}

// nakOne Naks it for a redelivery after a delay, remembering err for the
// MAX_DELIVERIES advisory should this be its last delivery.
func (l *partitionLoop) nakOne(it *item, err error) {
	if md, merr := it.msg.Metadata(); merr == nil {
		l.w.lastErrs.put(md.Sequence.Stream, errorText(err))
	}
	if nerr := it.msg.NakWithDelay(nakDelay(it.delivered)); nerr != nil {
		l.log.Warn("nak failed", "err", nerr)
	}
	l.w.m.messages.WithLabelValues("nak").Inc()
}

// keepAlive tells JetStream that msgs are being worked on, every third of
// the ack wait, until the returned function is called, so that a slow batch
// (retries, a database that is slow to answer) is not redelivered to
// another worker meanwhile.
func (l *partitionLoop) keepAlive(msgs []jetstream.Msg) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.w.cfg.AckWait / 3)
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

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
