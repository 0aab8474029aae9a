// Package worker is the worker side of the event-driven checkout: the
// partition consumers that apply commands to PostgreSQL, the saga sweeper
// of multi-partition orders, and the outbox relay that publishes events and
// inter-partition commands to JetStream.
//
// Every worker process pulls every partition's durable consumer (part-<p>
// on ORDER_CMDS) through one priority group with the pinned-client policy:
// JetStream delivers a partition to one process at a time and moves it when
// that process goes silent, so processes split and take over partitions
// without a lease of their own. A partition loop applies what it fetched in
// batches, one database transaction each (postgres.DB.ApplyBatch), then
// caches the decisions in Redis and acks. Errors are settled by one table
// (settle.go).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
)

// Config configures a worker process. Zero values take the defaults.
type Config struct {
	Name               string        // this worker process's id (for pinning/logs)
	Partitions         int           // P: partition = order.Partition(sku, P)
	BatchSize          int           // max commands per transaction (default 500)
	PinnedTTL          time.Duration // priority-group pin timeout (default 5s)
	AckWait            time.Duration // default 10s
	MaxDeliver         int           // default 10
	PaymentHold        time.Duration // default 15m: hold_until on confirm, unless the SKUs set one; expiry.go sweeps it
	ReservationTimeout time.Duration // multi-partition saga timeout (default 10s)
}

// Deps are what a worker runs on.
type Deps struct {
	Log      *slog.Logger
	DB       *postgres.DB
	NC       *nats.Conn
	JS       jetstream.JetStream
	Redis    *redisstore.Store
	Registry *prometheus.Registry
	// DatabaseURL, if set, lets the outbox relay LISTEN for the outbox
	// notification on a connection of its own, so that events leave within
	// milliseconds of a commit in any process. Without it the relay is woken
	// by this process's own batches and polls every second for the others'.
	DatabaseURL string
}

// Worker runs the partition consumers, the sweeper and the relay of one
// process.
type Worker struct {
	cfg  Config
	d    Deps
	log  *slog.Logger
	m    *metrics
	pcfg postgres.PartitionConfig
	kick chan struct{} // wakes the local relay after a batch wrote to the outbox

	fetchWait time.Duration
	relay     *relay
	lastErrs  lastErrors     // last errors of Nak'ed messages, for MAX_DELIVERIES advisories
	pins      []atomic.Value // per partition: the Nats-Pin-Id this process holds, or ""

	// applyHook, if set (tests), runs before each batch is applied; an
	// error fails the attempt as if the database had returned it.
	applyHook func(p int, cmds []order.Command) error
}

// New checks cfg and d and returns a worker; Run runs it. It fails if
// Partitions is not positive or a dependency is missing.
func New(cfg Config, d Deps) (*Worker, error) {
	switch {
	case cfg.Partitions < 1:
		return nil, fmt.Errorf("worker: %d partitions", cfg.Partitions)
	case d.DB == nil || d.JS == nil || d.Redis == nil:
		return nil, errors.New("worker: DB, JS and Redis are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = natsbus.DefaultBatchSize
	}
	cfg.BatchSize = min(cfg.BatchSize, order.MaxEnvelopeCommands)
	if cfg.PinnedTTL <= 0 {
		cfg.PinnedTTL = natsbus.DefaultPinnedTTL
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = natsbus.DefaultAckWait
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = natsbus.DefaultMaxDeliver
	}
	if cfg.PaymentHold <= 0 {
		cfg.PaymentHold = 15 * time.Minute
	}
	if cfg.ReservationTimeout <= 0 {
		cfg.ReservationTimeout = 10 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "worker"
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	var reg prometheus.Registerer
	if d.Registry != nil {
		reg = d.Registry
	}
	w := &Worker{
		cfg: cfg,
		d:   d,
		log: d.Log.With("worker", cfg.Name),
		m:   newMetrics(reg),
		pcfg: postgres.PartitionConfig{
			Partitions:         cfg.Partitions,
			PaymentHold:        cfg.PaymentHold,
			ReservationTimeout: cfg.ReservationTimeout,
			Marks:              soldOutMarks(d.Redis), // the ingress's sold-out markers (rejections.go)
		},
		kick: make(chan struct{}, 1),
		// A pinned worker pulls again well within the pin's TTL.
		fetchWait: min(time.Second, cfg.PinnedTTL/3),
	}
	w.relay = newRelay(w)
	w.pins = make([]atomic.Value, cfg.Partitions)
	return w, nil
}

// setPin records the pin id this process holds on partition p ("" none).
func (w *Worker) setPin(p int, pin string) { w.pins[p].Store(pin) }

// pin returns the pin id this process holds on partition p, or "".
func (w *Worker) pin(p int) string {
	s, _ := w.pins[p].Load().(string)
	return s
}

// applyBatch applies cmds in partition p's transaction, after the test
// hook if one is set.
func (w *Worker) applyBatch(ctx context.Context, p int, cmds []order.Command) (*postgres.BatchResult, error) {
	if w.applyHook != nil {
		if err := w.applyHook(p, cmds); err != nil {
			return nil, err
		}
	}
	return w.d.DB.ApplyBatch(ctx, p, cmds, w.pcfg)
}

// Run creates or updates the partition consumers, then runs every
// partition's consumer loop, the reservation sweeper and the outbox relay
// until ctx is done. It then drains: the loops stop fetching, finish and
// ack what they hold, unpin their partitions so another process takes them
// at once, and the relay publishes what is left in the outbox (if it is the
// active one) and lets go of its lock. It returns nil after a drain, or an
// error if the consumers cannot be created (the streams must exist:
// natsbus.EnsureStreams).
func (w *Worker) Run(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	consumers, err := natsbus.EnsurePartitionConsumers(cctx, w.d.JS, w.cfg.Partitions, natsbus.ConsumerSettings{
		BatchSize:  w.cfg.BatchSize,
		AckWait:    w.cfg.AckWait,
		MaxDeliver: w.cfg.MaxDeliver,
		PinnedTTL:  w.cfg.PinnedTTL,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w.log.Info("worker started", "partitions", w.cfg.Partitions, "batch_size", w.cfg.BatchSize, "pinned_ttl", w.cfg.PinnedTTL)

	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		w.relay.run(relayCtx)
	}()

	var wg sync.WaitGroup
	for p, c := range consumers {
		wg.Go(func() { newPartitionLoop(w, p, c).run(ctx) })
	}
	wg.Go(func() { w.sweep(ctx) })
	wg.Go(func() { w.recordRejections(ctx) }) // orders the ingress rejected itself (rejections.go)
	wg.Go(func() { w.deadLetters(ctx) })
	wg.Go(func() { w.watchLag(ctx) })
	wg.Wait()
	w.log.Info("partitions drained")
	stopRelay()
	<-relayDone
	w.log.Info("worker stopped")
	return nil
}

// wakeRelay tells the local relay that the outbox has new rows.
func (w *Worker) wakeRelay() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// cache writes decided orders to the status cache, removes purchased SKUs
// from carts and moves partition p's line on by the checkouts applied.
func (w *Worker) cache(ctx context.Context, p int, res *postgres.BatchResult) error {
	if len(res.Orders) == 0 && len(res.CartRemovals) == 0 && res.Checkouts == 0 {
		return nil
	}
	if err := w.d.Redis.ApplyPartition(ctx, p, res.Checkouts, res.Orders, res.CartRemovals); err != nil {
		return err
	}
	// Wake the waiting clients now; the events follow through the outbox.
	if err := natsbus.NotifyStatus(w.d.NC, res.Orders); err != nil {
		w.log.Debug("status note not sent", "err", err)
	}
	return nil
}

// cacheLater caches, in the background, decisions whose status cache
// update failed and that no redelivery will cache again: the reservation
// sweeper's rejections and the expiry sweep's expirations are committed
// outside any command message, and a batch acked at its message's last
// delivery, or in applyEach, has no redelivery to come. Without it the
// cache would keep the order's earlier status (pending, or confirmed) for
// StatusTTL, and every reader not woken by the event would see it (found
// by make chaos: a sweep during a Redis restart). The cache only moves
// forward (redisstore's forwardScript), so a late write cannot hide a
// newer status.
func (w *Worker) cacheLater(ctx context.Context, p int, res *postgres.BatchResult) {
	go retryUntil(ctx, 500*time.Millisecond, 10*time.Second, func() error { return w.cache(ctx, p, res) })
}

// retryUntil calls try until it succeeds or ctx ends, pausing first, then
// twice as long each time, at most maxPause.
func retryUntil(ctx context.Context, first, maxPause time.Duration, try func() error) error {
	for d := first; ; d = min(2*d, maxPause) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		if err := try(); err == nil {
			return nil
		}
	}
}

// count records a batch's outcomes.
func (w *Worker) count(res *postgres.BatchResult) {
	for _, o := range res.Outcomes {
		w.m.decisions.WithLabelValues(string(o.Status), string(o.Reason)).Inc()
	}
}

// sweep rejects multi-partition orders whose reservations missed their
// deadline, in every process (the query skips orders another sweeper or a
// partition holds), a few times per timeout.
func (w *Worker) sweep(ctx context.Context) {
	every := min(max(w.cfg.ReservationTimeout/4, 100*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			res, err := w.d.DB.SweepReservations(ctx, w.pcfg, 100)
			if err != nil {
				if ctx.Err() == nil {
					w.log.Warn("reservation sweep failed", "err", err)
				}
				break
			}
			if len(res.Orders) == 0 {
				break
			}
			w.count(res)
			w.m.sweeps.Add(float64(len(res.Orders)))
			w.wakeRelay()
			for _, o := range res.Orders {
				w.log.Info("order rejected: reservation timeout", "order", o.ID, "skus", o.RejectSKUs)
			}
			if err := w.cache(ctx, redisstore.NoQueue, res); err != nil {
				w.log.Warn("status cache update after sweep failed; retrying in the background", "err", err)
				w.cacheLater(ctx, redisstore.NoQueue, res)
			}
		}
	}
}
