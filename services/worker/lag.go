package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
)

// lagEvery is how often watchLag samples the queues and the outbox.
const lagEvery = 2 * time.Second

// watchLag samples, until ctx is done, what the dashboard shows of the
// queues: each partition's queue depth (NumPending) and unacked commands
// (NumAckPending) from its consumer's info, whether this process holds the
// partition's pin (the consumer's pinned client id is the Nats-Pin-Id this
// process last received), the outbox backlog and the unreplayed dead
// letters. Every process reports the shared values; dashboards take max.
func (w *Worker) watchLag(ctx context.Context) {
	labels := make([]string, w.cfg.Partitions)
	for p := range labels {
		labels[p] = strconv.Itoa(p)
	}
	defer func() {
		for _, l := range labels {
			w.m.partPinned.WithLabelValues(l).Set(0)
		}
	}()
	consumers := make([]jetstream.Consumer, w.cfg.Partitions)
	t := time.NewTicker(lagEvery)
	defer t.Stop()
	for {
		w.sampleLag(ctx, consumers, labels)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Worker) sampleLag(ctx context.Context, consumers []jetstream.Consumer, labels []string) {
	ctx, cancel := context.WithTimeout(ctx, lagEvery)
	defer cancel()
	held := map[int]string{}
	for p := range consumers {
		if consumers[p] == nil {
			c, err := w.d.JS.Consumer(ctx, natsbus.CommandStream, natsbus.PartitionConsumerName(p))
			if err != nil {
				continue
			}
			consumers[p] = c
		}
		info, err := consumers[p].Info(ctx)
		if err != nil {
			continue
		}
		w.m.partPending.WithLabelValues(labels[p]).Set(float64(info.NumPending))
		w.m.partAckPending.WithLabelValues(labels[p]).Set(float64(info.NumAckPending))
		pinned := 0.0
		if mine := w.pin(p); mine != "" {
			for _, g := range info.PriorityGroups {
				if g.Group == natsbus.PriorityGroup && g.PinnedClientID == mine {
					pinned = 1
				}
			}
		}
		w.m.partPinned.WithLabelValues(labels[p]).Set(pinned)
		if pinned == 1 {
			held[p] = w.pin(p)
		}
	}
	// Name this process as the holder of its pins, for the operator page.
	if w.d.NC != nil && len(held) > 0 {
		if err := natsbus.AnnouncePins(w.d.NC, w.cfg.Name, held); err != nil {
			w.log.Debug("pin note not sent", "err", err)
		}
	}
	if n, oldest, err := w.d.DB.OutboxBacklog(ctx); err == nil {
		w.m.outboxPending.Set(float64(n))
		age := 0.0
		if n > 0 && !oldest.IsZero() {
			age = max(time.Since(oldest).Seconds(), 0)
		}
		w.m.outboxAge.Set(age)
	}
	if n, err := w.d.DB.UnreplayedDeadLetters(ctx); err == nil {
		w.m.deadUnreplayed.Set(float64(n))
	}
}
