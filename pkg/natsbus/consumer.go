package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PriorityGroup is the one priority group of every partition consumer. A
// worker's pull requests name it (jetstream.FetchPriorityGroup), and the
// server pins each partition's consumer to one client of the group at a
// time.
const PriorityGroup = "workers"

// PartitionConsumerName returns the durable name of partition p's consumer,
// "part-<p>".
func PartitionConsumerName(p int) string { return "part-" + strconv.Itoa(p) }

// ConsumerSettings are the tunable parts of the partition consumers. Zero
// values take the defaults documented on PartitionConsumerConfig.
type ConsumerSettings struct {
	BatchSize  int           // the most messages one pull request asks for
	AckWait    time.Duration // the first redelivery delay of an unacked message
	MaxDeliver int           // deliveries before a command is given up (a dead letter)
	PinnedTTL  time.Duration // how long a silent pinned client keeps its partition
}

// Defaults of ConsumerSettings.
const (
	DefaultBatchSize  = 500
	DefaultAckWait    = 10 * time.Second
	DefaultMaxDeliver = 10
	DefaultPinnedTTL  = 5 * time.Second
)

func (s ConsumerSettings) withDefaults() ConsumerSettings {
	if s.BatchSize <= 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.AckWait <= 0 {
		s.AckWait = DefaultAckWait
	}
	if s.MaxDeliver <= 0 {
		s.MaxDeliver = DefaultMaxDeliver
	}
	if s.PinnedTTL <= 0 {
		s.PinnedTTL = DefaultPinnedTTL
	}
	return s
}

// PartitionConsumerConfig is the durable pull consumer of partition p on the
// ORDER_CMDS stream. Each setting and why:
//
//   - Storage and retention come from the stream (CommandStreamConfig): a
//     file-backed work queue, so a command survives a restart of NATS and is
//     removed once its partition acked it. The consumer's own state (what is
//     delivered and acked) is kept in the same storage (MemoryStorage false)
//     and replicated like the stream (Replicas 0 inherits), so a restarted
//     server neither forgets pending commands nor redelivers acked ones.
//   - Dedupe: the stream drops a command republished with the same
//     Nats-Msg-Id within its two-minute window; beyond it a partition skips a
//     command it already applied (processed_commands, the orders primary
//     key), so the consumer itself needs no dedupe.
//   - FilterSubject orders.cmd.<p>: one consumer per partition. A work-queue
//     stream requires consumers with disjoint filters, and this is what
//     serializes a partition's stock changes.
//   - AckExplicit: a worker acks only after the batch's transaction
//     committed; a crash before that redelivers the commands.
//   - AckWait (default 10s) is how long an unacked command waits before it
//     goes to another delivery (after a worker died mid-batch). A batch
//     commits in milliseconds; a worker that is slower (retrying a
//     conflicting batch, waiting for the database) sends InProgress, so the
//     value only bounds recovery after a crash: the orders of a batch a killed
//     worker held wait this long (the SPEC wants a pending order final within
//     seconds under any single fault), hence 10s rather than 30s. The server takes BackOff[0] as the ack wait, so BackOff starts
//     at AckWait.
//   - BackOff AckWait, 2×, 4×, ... capped at 5 minutes: a command whose
//     worker keeps dying (a crash it causes, or a flapping node) is retried
//     ever more slowly instead of hammering the partition. Naks for transient
//     errors choose their own delay (NakWithDelay), which BackOff does not
//     override.
//   - MaxDeliver (default 10): after that many deliveries the command stops
//     being redelivered and the server's MAX_DELIVERIES advisory makes it a
//     dead letter that an operator can replay. Workers never spend deliveries
//     on database outages at the last attempt: they hold the batch instead.
//   - MaxAckPending 2×BatchSize (at least 1000): the pinned worker has at
//     most one pull of BatchSize messages unacked, and during a takeover the
//     old client's unacked batch must not block the new one.
//   - PriorityPolicy pinned, one group "workers", PinnedTTL (default 5s):
//     every worker process pulls every partition, and the server delivers a
//     partition's commands to one pinned client only. A client that sends no
//     pull request for PinnedTTL (dead, partitioned away) loses the pin and
//     another waiting client gets it, so a dead worker's partitions move
//     within seconds; a worker that stops cleanly unpins at once. Workers
//     pull at least every second, so a live worker never loses its pin to
//     the TTL. During a takeover two clients may briefly write one partition:
//     the database's row locks and stock guard keep that safe.
//   - MaxWaiting 512 (the server default) holds the idle pull requests of up
//     to hundreds of standby workers per partition.
//   - DeliverAll, ReplayInstant: a new consumer starts at the oldest command
//     still in the work queue, as fast as it can.
func PartitionConsumerConfig(p int, s ConsumerSettings) jetstream.ConsumerConfig {
	s = s.withDefaults()
	return jetstream.ConsumerConfig{
		Name:           PartitionConsumerName(p),
		Durable:        PartitionConsumerName(p),
		Description:    fmt.Sprintf("partition %d's commands, pinned to one worker at a time", p),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.AckWait,
		MaxDeliver:     s.MaxDeliver,
		BackOff:        Backoff(s.AckWait, s.MaxDeliver),
		FilterSubject:  "orders.cmd." + strconv.Itoa(p),
		ReplayPolicy:   jetstream.ReplayInstantPolicy,
		MaxAckPending:  max(2*s.BatchSize, 1000),
		MaxWaiting:     512,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      s.PinnedTTL,
		PriorityGroups: []string{PriorityGroup},
	}
}

// Backoff returns the redelivery delays of a command that is not acked in
// time: first, then doubling up to five minutes, one per delivery but the
// last (the server requires no more entries than MaxDeliver).
func Backoff(first time.Duration, maxDeliver int) []time.Duration {
	n := min(maxDeliver-1, 8)
	if n < 1 {
		return nil
	}
	out := make([]time.Duration, n)
	d := first
	for i := range out {
		out[i] = min(d, 5*time.Minute)
		d *= 2
	}
	return out
}

// EnsurePartitionConsumers creates or updates the consumers of partitions 0
// to n-1 on ORDER_CMDS, idempotently, and returns them in partition order.
// The stream must exist (EnsureStreams).
func EnsurePartitionConsumers(ctx context.Context, js jetstream.JetStream, n int, s ConsumerSettings) ([]jetstream.Consumer, error) {
	if n < 1 {
		return nil, fmt.Errorf("ensure consumers: %d partitions", n)
	}
	out := make([]jetstream.Consumer, n)
	for p := range n {
		c, err := js.CreateOrUpdateConsumer(ctx, CommandStream, PartitionConsumerConfig(p, s))
		if err != nil {
			return nil, fmt.Errorf("ensure consumer %s: %w", PartitionConsumerName(p), err)
		}
		out[p] = c
	}
	return out, nil
}

// Unpin releases partition p's pin if pinID (the Nats-Pin-Id a worker last
// saw on its messages) is still the pinned client, so that another worker
// takes the partition over at once rather than after the pin's TTL. It does
// nothing when another client holds the pin.
func Unpin(ctx context.Context, js jetstream.JetStream, p int, pinID string) error {
	if pinID == "" {
		return nil
	}
	name := PartitionConsumerName(p)
	c, err := js.Consumer(ctx, CommandStream, name)
	if err != nil {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	if pinned, _ := PinnedClient(info); pinned != pinID {
		return nil
	}
	st, err := js.Stream(ctx, CommandStream)
	if err != nil {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	if err := st.UnpinConsumer(ctx, name, PriorityGroup); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	return nil
}
