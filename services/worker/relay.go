package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lib/pq"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/postgres"
)

// Relay timings.
const (
	relayPoll     = time.Second      // poll for rows written by other processes
	relayRetry    = time.Second      // wait before trying the lock or a failed publish again
	relayBatch    = 1000             // outbox rows read and published at once
	relayAckWait  = 10 * time.Second // wait for JetStream's acks of one batch
	relayFinalTTL = 5 * time.Second  // the last flush when the worker stops
)

// relay publishes the outbox to JetStream. One relay is active across every
// worker process: the holder of the relay lock (a session advisory lock on a
// dedicated connection). The others wait for it and take over within a
// second when its session ends.
//
// Rows are read in id order, a thousand at a time, published (events in
// atomic batches, commands packed per partition: see publish) and deleted
// once JetStream acked all of them; after a failure none is deleted and
// they are published again from the database. A relay that dies between the
// publish and the delete publishes those rows again when it (or another)
// takes over: JetStream drops the copies within its two-minute dedupe
// window, partitions skip commands they applied, and consumers dedupe on
// the event id beyond it. Rows of one order are written in id order by
// transactions that lock the order, so its events go out in order.
type relay struct {
	w   *Worker
	log *slog.Logger

	// atomic publishes runs of events as atomic batches (off when the
	// process has no NATS connection to send them on).
	atomic bool

	// afterPublish, if set (tests), runs after a batch was published and
	// before its rows are deleted; an error aborts the batch there, as a
	// crash would.
	afterPublish func() error
}

func newRelay(w *Worker) *relay {
	return &relay{w: w, log: w.log.With("component", "relay"), atomic: w.d.NC != nil}
}

// run relays until ctx is done, then publishes what is left (if active)
// and lets go of the lock.
func (r *relay) run(ctx context.Context) {
	var notify <-chan *pq.Notification
	if r.w.d.DatabaseURL != "" {
		l := pq.NewListener(r.w.d.DatabaseURL, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
			if err != nil {
				r.log.Debug("outbox listener", "event", ev, "err", err)
			}
		})
		if err := l.Listen(postgres.OutboxChannel); err != nil {
			r.log.Warn("cannot LISTEN to the outbox; polling", "err", err)
		} else {
			notify = l.NotificationChannel()
		}
		defer l.Close()
	}
	for ctx.Err() == nil {
		if !r.connected() {
			sleep(ctx, relayRetry) // leave the outbox to a relay that reaches NATS
			continue
		}
		lock, err := r.w.d.DB.TryRelayLock(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("relay lock", "err", err)
			}
			sleep(ctx, relayRetry)
			continue
		}
		if lock == nil {
			sleep(ctx, relayRetry) // another relay is active
			continue
		}
		r.log.Info("outbox relay active")
		r.w.m.relayActive.Set(1)
		err = r.active(ctx, lock, notify)
		if ctx.Err() != nil {
			// Publish what the drained partitions wrote last.
			fctx, cancel := context.WithTimeout(context.Background(), relayFinalTTL)
			if ferr := r.flush(fctx, lock); ferr != nil {
				r.log.Warn("final outbox flush failed; the next relay publishes the rest", "err", ferr)
			}
			cancel()
		}
		if rerr := lock.Release(); rerr != nil {
			r.log.Warn("relay unlock", "err", rerr)
		}
		r.w.m.relayActive.Set(0)
		if err != nil {
			r.log.Warn("outbox relay stopped; retrying", "err", err)
			sleep(ctx, relayRetry)
		}
	}
}

// connected reports whether this process reaches NATS. A relay that does
// not must not hold the lock: another process may.
func (r *relay) connected() bool {
	return r.w.d.NC == nil || r.w.d.NC.IsConnected()
}

// active publishes while this relay holds the lock, waking on the
// notification, a local batch's kick, or the poll.
func (r *relay) active(ctx context.Context, lock *postgres.RelayLock, notify <-chan *pq.Notification) error {
	t := time.NewTicker(relayPoll)
	defer t.Stop()
	for {
		if !r.connected() {
			return errors.New("lost the NATS connection: stepping down")
		}
		if err := r.flush(ctx, lock); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.w.kick:
		case <-notify:
		}
	}
}

// flush publishes outbox rows until none is left.
func (r *relay) flush(ctx context.Context, lock *postgres.RelayLock) error {
	for {
		rows, err := lock.Pending(ctx, relayBatch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		n, perr := r.publish(ctx, rows)
		if perr == nil && r.afterPublish != nil {
			if err := r.afterPublish(); err != nil {
				return err
			}
		}
		if n > 0 {
			// Deleting counts what the events hold (reconciliation's
			// event count): only rows JetStream acked.
			if err := lock.Delete(ctx, rows[:n]); err != nil {
				return err
			}
		}
		if perr != nil {
			return perr
		}
	}
}

// publish publishes rows and returns how many, from the first, JetStream
// acknowledged (all or none), and the first error.
//
// Events go out in order, runs of them as atomic batches (one fsync each on
// a one-replica stream). Commands for other partitions (a multi-partition
// order's reserve, release and results) are packed per partition into
// envelopes of many commands, as the ingress packs checkouts: a flush of a
// thousand rows costs a few messages, a few fsyncs and, on the partitions'
// side, a few acks, instead of one each; a flash sale's sagas would
// otherwise queue here. A command's order is kept within its partition's
// envelopes. When any message fails, no row is deleted and the whole flush
// is published again: JetStream drops the events and envelopes it has
// already stored (same Nats-Msg-Id, within its dedupe window), and a
// partition skips the commands it has already applied.
func (r *relay) publish(ctx context.Context, rows []postgres.OutboxRow) (int, error) {
	var events, cmds []postgres.OutboxRow
	for _, row := range rows {
		if isEvent(row) {
			events = append(events, row)
		} else {
			cmds = append(cmds, row)
		}
	}
	envs, err := packCommands(cmds)
	if err != nil {
		return 0, err
	}
	if _, err := r.publishEach(ctx, envs, "command"); err != nil {
		return 0, err
	}
	for _, row := range cmds {
		r.w.m.relayLag.Observe(time.Since(row.CreatedAt).Seconds())
	}
	r.w.m.relayed.WithLabelValues("command").Add(float64(len(cmds)))
	if err := r.publishEvents(ctx, events); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// publishEvents publishes event rows in order: runs as atomic batches, or
// one message each when the server refuses a batch (a row already stored
// within the dedupe window, after a relay crash).
func (r *relay) publishEvents(ctx context.Context, rows []postgres.OutboxRow) error {
	for done := 0; done < len(rows); {
		end := min(done+natsbus.MaxAtomicBatch, len(rows))
		run := rows[done:end]
		done = end
		if len(run) > 1 && r.atomic {
			err := r.publishAtomic(ctx, run)
			if err == nil {
				continue
			}
			if !errors.Is(err, natsbus.ErrBatchRefused) {
				return err
			}
			r.log.Debug("atomic batch refused; publishing one by one", "rows", len(run), "err", err)
		}
		if _, err := r.publishEach(ctx, run, "event"); err != nil {
			return err
		}
		for _, row := range run {
			r.w.m.relayLag.Observe(time.Since(row.CreatedAt).Seconds())
		}
		r.w.m.relayed.WithLabelValues("event").Add(float64(len(run)))
	}
	return nil
}

func isEvent(row postgres.OutboxRow) bool { return !strings.HasPrefix(row.Subject, "orders.cmd.") }

// relayEnvelopeMax bounds the commands the relay packs into one envelope.
const relayEnvelopeMax = 256

// packCommands packs command rows (each an envelope of one command, as
// postgres.CommandMessage writes them) into envelopes per subject, in row
// order, at most relayEnvelopeMax commands each. An envelope's Nats-Msg-Id
// derives from its commands' ids, so that the same rows packed again after
// a relay crash are dropped by JetStream as a duplicate.
func packCommands(rows []postgres.OutboxRow) ([]postgres.OutboxRow, error) {
	type pack struct {
		subject string
		cmds    []json.RawMessage
		ids     []string
	}
	var (
		packs []*pack
		open  = map[string]*pack{}
	)
	for _, row := range rows {
		var env struct {
			Commands []json.RawMessage `json:"commands"`
		}
		if err := json.Unmarshal(row.Payload, &env); err != nil {
			return nil, fmt.Errorf("outbox row %d: %w", row.ID, err)
		}
		pk := open[row.Subject]
		if pk == nil || len(pk.cmds)+len(env.Commands) > relayEnvelopeMax {
			pk = &pack{subject: row.Subject}
			open[row.Subject] = pk
			packs = append(packs, pk)
		}
		pk.cmds = append(pk.cmds, env.Commands...)
		pk.ids = append(pk.ids, row.MsgID)
	}
	out := make([]postgres.OutboxRow, len(packs))
	for i, pk := range packs {
		data, err := json.Marshal(struct {
			Commands []json.RawMessage `json:"commands"`
		}{pk.cmds})
		if err != nil {
			return nil, err
		}
		id := pk.ids[0]
		if len(pk.ids) > 1 {
			sum := sha256.Sum256([]byte(strings.Join(pk.ids, ",")))
			id = "pack-" + hex.EncodeToString(sum[:16])
		}
		out[i] = postgres.OutboxRow{OutboxMessage: postgres.OutboxMessage{MsgID: id, Subject: pk.subject, Payload: data}}
	}
	return out, nil
}

// publishAtomic publishes run as one atomic batch.
func (r *relay) publishAtomic(ctx context.Context, run []postgres.OutboxRow) error {
	msgs := make([]natsbus.Message, len(run))
	for i, row := range run {
		msgs[i] = natsbus.Message{Subject: row.Subject, Data: row.Payload, MsgID: row.MsgID}
	}
	actx, cancel := context.WithTimeout(ctx, relayAckWait)
	defer cancel()
	if err := natsbus.PublishAtomic(actx, r.w.d.NC, msgs); err != nil {
		return err
	}
	for _, row := range run {
		r.w.m.relayLag.Observe(time.Since(row.CreatedAt).Seconds())
	}
	r.w.m.relayed.WithLabelValues("event").Add(float64(len(run)))
	return nil
}

// publishEach publishes rows asynchronously, one message each, and waits
// for their acks. It returns how many rows, from the first, are
// acknowledged, and the first error.
func (r *relay) publishEach(ctx context.Context, rows []postgres.OutboxRow, kind string) (int, error) {
	futs := make([]jetstream.PubAckFuture, 0, len(rows))
	var perr error
	for _, row := range rows {
		f, err := r.w.d.JS.PublishAsync(row.Subject, row.Payload, jetstream.WithMsgID(row.MsgID))
		if err != nil {
			perr = fmt.Errorf("publish %s %s: %w", kind, row.Subject, err)
			break
		}
		futs = append(futs, f)
	}
	timeout := time.NewTimer(relayAckWait)
	defer timeout.Stop()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for i := 0; i < len(futs); {
		select {
		case <-futs[i].Ok():
			i++
		case err := <-futs[i].Err():
			return i, fmt.Errorf("publish %s %s: %w", kind, rows[i].Subject, err)
		case <-check.C:
			if !r.connected() {
				return i, errors.New("publish: lost the NATS connection") // its acks never come
			}
		case <-timeout.C:
			return i, errors.New("publish: no ack from JetStream in time")
		case <-ctx.Done():
			return i, ctx.Err()
		}
	}
	return len(futs), perr
}
