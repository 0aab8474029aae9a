package worker

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's Prometheus collectors.
type metrics struct {
	batchCommands *prometheus.HistogramVec // commands per transaction
	txSeconds     *prometheus.HistogramVec // transaction latency
	decisions     *prometheus.CounterVec   // order status changes by outcome and reason
	messages      *prometheus.CounterVec   // messages settled, by action
	conflicts     prometheus.Counter       // batches applied again after ErrBatchConflict
	relayLag      prometheus.Histogram     // outbox write to JetStream ack
	relayed       *prometheus.CounterVec   // outbox messages published, by kind
	relayActive   prometheus.Gauge         // 1 while this process is the active relay
	sweeps        prometheus.Counter       // orders rejected by the reservation sweeper

	deadLetters    *prometheus.CounterVec // dead letters recorded, by reason
	deadUnreplayed prometheus.Gauge       // dead letters not replayed yet
	partPending    *prometheus.GaugeVec   // commands waiting for their partition (consumer NumPending)
	partAckPending *prometheus.GaugeVec   // commands delivered and not yet acked (NumAckPending)
	partPinned     *prometheus.GaugeVec   // 1 where this process holds the partition's pin
	outboxPending  prometheus.Gauge       // outbox rows not yet published
	outboxAge      prometheus.Gauge       // age of the oldest unpublished outbox row
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		batchCommands: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderd_worker_batch_commands",
			Help:    "Commands applied in one database transaction (group commit), by partition.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4096},
		}, []string{"partition"}),
		txSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderd_worker_batch_tx_seconds",
			Help:    "Latency of a partition batch's database transaction, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"partition"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_worker_decisions_total",
			Help: "Order status changes made by the partitions and the sweeper, by outcome (pending, confirmed, rejected, cancelled) and reject reason.",
		}, []string{"outcome", "reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_worker_messages_total",
			Help: "Command messages settled, by action (ack, nak, term).",
		}, []string{"action"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_worker_batch_conflicts_total",
			Help: "Batches applied again because another writer changed the partition's rows (pin takeover).",
		}),
		relayLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderd_relay_lag_seconds",
			Help:    "Time from an outbox row's commit to JetStream's ack of its message.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_relay_published_total",
			Help: "Outbox messages published to JetStream, by kind (event, command).",
		}, []string{"kind"}),
		relayActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_relay_active",
			Help: "1 while this process holds the relay lock and publishes the outbox.",
		}),
		sweeps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_worker_reservation_timeouts_total",
			Help: "Multi-partition orders rejected because a reservation missed its deadline.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_dead_letters_total",
			Help: "Command messages and single commands recorded as dead letters, by reason (max_deliveries, poison_message, poison_command).",
		}, []string{"reason"}),
		deadUnreplayed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_dead_letters_unreplayed",
			Help: "Dead letters that no operator replayed yet (all processes).",
		}),
		partPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orderd_partition_pending",
			Help: "Command messages in a partition's queue not yet delivered to a worker (consumer NumPending): the queue depth.",
		}, []string{"partition"}),
		partAckPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orderd_partition_ack_pending",
			Help: "Command messages delivered to a partition's worker and not yet acked (consumer NumAckPending).",
		}, []string{"partition"}),
		partPinned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orderd_partition_pinned",
			Help: "1 on the worker process that holds the partition's pin (the one applying its commands), else 0.",
		}, []string{"partition"}),
		outboxPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_outbox_pending_rows",
			Help: "Outbox rows (events, inter-partition commands) not yet published to JetStream.",
		}),
		outboxAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_outbox_oldest_age_seconds",
			Help: "Age of the oldest unpublished outbox row (0 when the outbox is empty): the relay's lag.",
		}),
	}
	if reg == nil {
		return m
	}
	m.batchCommands = register(reg, m.batchCommands)
	m.txSeconds = register(reg, m.txSeconds)
	m.decisions = register(reg, m.decisions)
	m.messages = register(reg, m.messages)
	m.conflicts = register(reg, m.conflicts)
	m.relayLag = register(reg, m.relayLag)
	m.relayed = register(reg, m.relayed)
	m.relayActive = register(reg, m.relayActive)
	m.sweeps = register(reg, m.sweeps)
	m.deadLetters = register(reg, m.deadLetters)
	m.deadUnreplayed = register(reg, m.deadUnreplayed)
	m.partPending = register(reg, m.partPending)
	m.partAckPending = register(reg, m.partAckPending)
	m.partPinned = register(reg, m.partPinned)
	m.outboxPending = register(reg, m.outboxPending)
	m.outboxAge = register(reg, m.outboxAge)
	return m
}

// register registers c, or returns the collector already registered under
// its name (two workers in one process share one registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
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
