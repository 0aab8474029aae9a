package natsbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/order"
)

// BatchPublisher publishes commands with group commit: concurrent Publish
// calls for one partition are packed into one JetStream message (an
// order.Envelope), so that one fsync on the server carries many orders.
//
// It batches only under load. A partition's queue has at most InFlight
// messages being published at a time; while they are, new commands wait in
// the queue, and the next message takes all of them (up to MaxBatch). A lone
// command is published at once, alone. Every caller returns only after the
// message that carries its command is acknowledged by JetStream (and so, with
// sync_interval always, on disk), or with an error when that is unknown.
//
// A caller that gives up (its context ends) while its command still waits
// in the queue takes it out: the command is never sent, and the error says
// so (ErrNotPublished). Once a message carries the command, nobody can
// take it back: the server may store it whenever the message arrives, and
// the caller's error says that the command may be stored.
//
// Records of orders the ingress decided itself (order.KindRecordRejection)
// have a queue of their own after the partitions', on order.IngressSubject.
type BatchPublisher struct {
	js       jetstream.JetStream
	timeout  time.Duration
	maxBatch int
	queues   []chan *pending
	wg       sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once

	pubSeconds prometheus.Histogram // PubAck latency of one message (the fsync)
	batchSize  prometheus.Histogram // commands per message
}

// BatchConfig sets a BatchPublisher's limits.
type BatchConfig struct {
	Partitions int           // number of partitions (one queue each)
	MaxBatch   int           // most commands in one message (default 256)
	InFlight   int           // messages being published at once per partition (default 2)
	Timeout    time.Duration // how long one message may wait for its PubAck (default 5s)
	// Registerer, if set, gets the publisher's metrics:
	// orderd_publish_seconds and orderd_publish_batch_commands.
	Registerer prometheus.Registerer
}

// ErrNotPublished marks an error of Publish after which the command is
// certainly not stored, now or later: it never left this process. Any
// other error of Publish leaves that unknown.
var ErrNotPublished = errors.New("the command was not published")

// A pending command is queued until either a message takes it or its
// caller abandons it, whichever comes first; the other finds it moved on.
const (
	queued int32 = iota
	taken
	abandoned
)

type pending struct {
	raw   json.RawMessage
	id    uuid.UUID
	done  chan error
	state atomic.Int32 // queued, then taken or abandoned
}

// take moves p from the queue into a message, unless its caller abandoned
// it.
func (p *pending) take() bool { return p.state.CompareAndSwap(queued, taken) }

// abandon takes p out of the queue for its caller, unless a message took
// it already.
func (p *pending) abandon() bool { return p.state.CompareAndSwap(queued, abandoned) }

// NewBatchPublisher starts one queue per partition; Close stops them.
func NewBatchPublisher(js jetstream.JetStream, cfg BatchConfig) *BatchPublisher {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	cfg.MaxBatch = min(cfg.MaxBatch, order.MaxEnvelopeCommands)
	if cfg.InFlight <= 0 {
		cfg.InFlight = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	b := &BatchPublisher{js: js, timeout: cfg.Timeout, maxBatch: cfg.MaxBatch, stop: make(chan struct{})}
	b.pubSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "orderd_publish_seconds",
		Help:    "Time from publishing a command message to JetStream's PubAck (with sync_interval always, the fsync).",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	})
	b.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "orderd_publish_batch_commands",
		Help:    "Commands packed into one JetStream message by the ingress (group commit).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096},
	})
	if cfg.Registerer != nil {
		b.pubSeconds = registerOnce(cfg.Registerer, b.pubSeconds)
		b.batchSize = registerOnce(cfg.Registerer, b.batchSize)
	}
	// One queue per partition, and the ingress decisions' queue last.
	b.queues = make([]chan *pending, max(cfg.Partitions, 1)+1)
	for p := range b.queues {
		b.queues[p] = make(chan *pending, cfg.MaxBatch*cfg.InFlight*2)
		subject := order.Subject(p)
		if p == len(b.queues)-1 {
			subject = order.IngressSubject
		}
		b.wg.Add(1)
		go b.run(p, subject, cfg.InFlight)
	}
	return b
}

// Publish queues cmd for its partition and waits until the message carrying
// it is acknowledged, or ctx ends. An EUNAVAILABLE error means JetStream did
// not confirm the command in time: if it wraps ErrNotPublished, the command
// was never sent (ctx ended while it was queued, or the publisher closed);
// otherwise it may be stored, now or later, and a retry with the same
// command id is safe (the partition skips a command it has applied).
func (b *BatchPublisher) Publish(ctx context.Context, cmd order.Command) error {
	if cmd.Partition < 0 || cmd.Partition >= len(b.queues)-1 {
		return fmt.Errorf("publish command: partition %d of %d", cmd.Partition, len(b.queues)-1)
	}
	q := b.queues[cmd.Partition]
	if cmd.Kind == order.KindRecordRejection {
		q = b.queues[len(b.queues)-1]
	}
	raw, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("encode command: %w", err)
	}
	p := &pending{raw: raw, id: cmd.ID, done: make(chan error, 1)}
	select {
	case q <- p:
	case <-ctx.Done():
		return notPublished(ctx.Err())
	case <-b.stop:
		return notPublished(errClosed)
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		if p.abandon() {
			return notPublished(ctx.Err())
		}
		return unavailable(fmt.Errorf("the message carrying the command was not acknowledged yet: %w", ctx.Err()))
	}
}

var errClosed = errors.New("publisher closed")

// Close stops the queues after the messages being published are settled.
// Commands still queued fail with EUNAVAILABLE.
func (b *BatchPublisher) Close() {
	b.stopOnce.Do(func() { close(b.stop) })
	b.wg.Wait()
}

func (b *BatchPublisher) run(queue int, subject string, inFlight int) {
	defer b.wg.Done()
	q := b.queues[queue]
	slots := make(chan struct{}, inFlight)
	var sends sync.WaitGroup
	defer sends.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-b.stop:
			b.failQueued(q)
			return
		}
		batch := b.next(q)
		if batch == nil {
			b.failQueued(q)
			return
		}
		sends.Add(1)
		go func() {
			defer sends.Done()
			defer func() { <-slots }()
			err := b.send(subject, batch)
			for _, p := range batch {
				p.done <- err
			}
		}()
	}
}

// next waits for the first command of q that its caller still waits for,
// and returns it with those queued behind it (up to maxBatch), taken; nil
// if the publisher stops first. Abandoned commands are dropped on the way.
func (b *BatchPublisher) next(q chan *pending) []*pending {
	var batch []*pending
	for len(batch) == 0 {
		select {
		case p := <-q:
			if p.take() {
				batch = append(batch, p)
			}
		case <-b.stop:
			return nil
		}
	}
	for len(batch) < b.maxBatch {
		select {
		case p := <-q:
			if p.take() {
				batch = append(batch, p)
			}
		default:
			return batch
		}
	}
	return batch
}

func (b *BatchPublisher) failQueued(q chan *pending) {
	for {
		select {
		case p := <-q:
			p.done <- notPublished(errClosed)
		default:
			return
		}
	}
}

// send publishes one envelope. A lone command keeps its own id as the
// Nats-Msg-Id, so a client's retry within the dedupe window is dropped by
// the stream; a batch gets a fresh id.
func (b *BatchPublisher) send(subject string, batch []*pending) error {
	var buf bytes.Buffer
	buf.WriteString(`{"commands":[`)
	for i, p := range batch {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(p.raw)
	}
	buf.WriteString(`]}`)
	msgID := batch[0].id.String()
	if len(batch) > 1 {
		msgID = uuid.NewString()
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	start := time.Now()
	_, err := b.js.Publish(ctx, subject, buf.Bytes(), jetstream.WithMsgID(msgID), jetstream.WithExpectStream(CommandStream))
	if err == nil {
		b.pubSeconds.Observe(time.Since(start).Seconds())
		b.batchSize.Observe(float64(len(batch)))
	}
	if err != nil {
		if Unavailable(err) {
			return unavailable(err)
		}
		return fmt.Errorf("publish %d commands: %w", len(batch), err)
	}
	return nil
}

// registerOnce registers c, or returns the collector already registered
// under its name (two publishers on one registry).
func registerOnce[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if prev, ok := are.ExistingCollector.(C); ok {
				return prev
			}
		}
		panic(err)
	}
	return c
}

// notPublished is unavailable for a command that was never sent.
func notPublished(err error) error {
	return unavailable(fmt.Errorf("%w: %w", ErrNotPublished, err))
}

func unavailable(err error) error {
	return fmt.Errorf("%w: %w", order.Errorf(order.EUNAVAILABLE, "the order queue did not confirm the order in time, retry with the same Idempotency-Key"), err)
}
