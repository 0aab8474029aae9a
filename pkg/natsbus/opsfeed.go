package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AcceptedSubject carries the accepted notes: every ingress process with an
// OpsFeed publishes, every AcceptedNoteEvery, how many checkouts it has
// answered 202 since it started (AcceptedNote, JSON, core NATS). Every
// OpsFeed sums the notes of all processes, so the operator page shows the
// accepted orders of the whole deployment whichever process serves it.
//
// Why not the ORDER_CMDS stream's counters or the partition consumers'
// info: they count messages, and the ingress packs many commands into one
// message (BatchPublisher), restocks and inter-partition commands included,
// so their rate is not the rate of accepted orders. The notes count exactly
// the 202s, cost one small message per process per AcceptedNoteEvery, and
// need nothing from the hot path but a counter it already keeps.
const AcceptedSubject = "orders.stats.accepted"

// AcceptedNoteEvery is how often an OpsFeed publishes its accepted note.
const AcceptedNoteEvery = 500 * time.Millisecond

// acceptedStale is how long a process's last accepted note counts towards
// the totals: a stopped process drops out after it.
const acceptedStale = 5 * time.Second

// AcceptedNote is one process's accepted count.
type AcceptedNote struct {
	Process  string    `json:"process"`  // a random id of the process's feed
	Started  time.Time `json:"started"`  // when the feed started
	At       time.Time `json:"at"`       // when the count was read
	Accepted int64     `json:"accepted"` // 202s answered since the process started
}

// OpsFeedConfig sets up an OpsFeed.
type OpsFeedConfig struct {
	Partitions int // PARTITIONS: the consumers part-0 to part-<n-1>
	Log        *slog.Logger
}

// OpsFeed is where an ingress process reads the deployment-wide numbers of
// the operator page:
//
//   - decided orders by event type and rejected orders by reason, counted
//     from the order events (a core NATS subscription to HubSubject, as the
//     status Hub has: every process sees every event, so the counts are the
//     whole deployment's since this process started; an event the relay
//     publishes twice after a crash counts twice);
//   - accepted orders, summed from every process's accepted notes
//     (AcceptedSubject);
//   - each partition's queue and pinned worker, from its consumer's info.
//
// Close stops it.
type OpsFeed struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	partitions int
	log        *slog.Logger
	process    string
	started    time.Time

	mu        sync.Mutex
	events    map[string]int64 // order events by type
	reasons   map[string]int64 // rejected orders by reason
	procs     map[string]*acceptedProc
	local     []func() int64
	consumers []jetstream.Consumer
	pinOwners map[string]pinOwner // pin id -> the worker that announced it (pins.go)

	// The last partition sample, shared by the callers of Partitions
	// within partitionsFresh of it.
	partsMu sync.Mutex
	parts   []PartitionState
	partsAt time.Time

	subs []*nats.Subscription
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// acceptedProc is what a feed knows of one process's accepted count.
type acceptedProc struct {
	last AcceptedNote
	rate float64   // accepted per second between its last two notes
	seen time.Time // when its last note arrived
}

// StartOpsFeed subscribes to the order events and the accepted notes and
// starts publishing this process's accepted note.
func StartOpsFeed(nc *nats.Conn, js jetstream.JetStream, cfg OpsFeedConfig) (*OpsFeed, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	f := &OpsFeed{
		nc: nc, js: js, partitions: max(cfg.Partitions, 1), log: cfg.Log,
		process: uuid.NewString(), started: time.Now(),
		events: map[string]int64{}, reasons: map[string]int64{}, procs: map[string]*acceptedProc{},
		pinOwners: map[string]pinOwner{},
		stop:      make(chan struct{}), done: make(chan struct{}),
	}
	f.consumers = make([]jetstream.Consumer, f.partitions)
	for subject, cb := range map[string]nats.MsgHandler{HubSubject: f.countEvent, AcceptedSubject: f.countAccepted, PinsSubject: f.notePins} {
		sub, err := nc.Subscribe(subject, cb)
		if err != nil {
			f.unsubscribe()
			return nil, fmt.Errorf("ops feed: subscribe %s: %w", subject, err)
		}
		if err := sub.SetPendingLimits(1<<20, 512<<20); err != nil {
			f.unsubscribe()
			return nil, fmt.Errorf("ops feed: pending limits: %w", err)
		}
		f.subs = append(f.subs, sub)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		f.unsubscribe()
		return nil, fmt.Errorf("ops feed: flush subscriptions: %w", err)
	}
	go f.publish()
	return f, nil
}

// CountAccepted adds fn to what this process's accepted note sums: fn
// returns the 202s a server answered since it started (an ingress Server
// calls this when it is built).
func (f *OpsFeed) CountAccepted(fn func() int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = append(f.local, fn)
}

// Close stops publishing and unsubscribes. It is safe to call more than
// once.
func (f *OpsFeed) Close() {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		f.unsubscribe()
	})
}

func (f *OpsFeed) unsubscribe() {
	for _, sub := range f.subs {
		if err := sub.Unsubscribe(); err != nil {
			f.log.Debug("ops feed: unsubscribe", "err", err)
		}
	}
}

// publish sends this process's accepted note every AcceptedNoteEvery
// until Close.
func (f *OpsFeed) publish() {
	defer close(f.done)
	t := time.NewTicker(AcceptedNoteEvery)
	defer t.Stop()
	for {
		f.mu.Lock()
		var n int64
		for _, fn := range f.local {
			n += fn()
		}
		f.mu.Unlock()
		note := AcceptedNote{Process: f.process, Started: f.started, At: time.Now(), Accepted: n}
		if data, err := json.Marshal(note); err == nil {
			if err := f.nc.Publish(AcceptedSubject, data); err != nil {
				f.log.Debug("ops feed: accepted note", "err", err)
			}
		}
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
	}
}

// opsEvent is the part of an order event the feed reads.
type opsEvent struct {
	Type string `json:"type"`
	Data struct {
		RejectReason string `json:"reject_reason"`
	} `json:"data"`
}

func (f *OpsFeed) countEvent(m *nats.Msg) {
	var ev opsEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Type == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events[ev.Type]++
	if ev.Type == "order.rejected" {
		r := ev.Data.RejectReason
		if r == "" {
			r = "unknown"
		}
		if len(f.reasons) < 64 || f.reasons[r] > 0 { // reasons are a short fixed list; bound it anyway
			f.reasons[r]++
		}
	}
}

func (f *OpsFeed) countAccepted(m *nats.Msg) {
	var n AcceptedNote
	if err := json.Unmarshal(m.Data, &n); err != nil || n.Process == "" {
		return
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.procs[n.Process]
	if p == nil {
		if len(f.procs) >= 1024 {
			f.forgetStaleLocked(now)
		}
		f.procs[n.Process] = &acceptedProc{last: n, seen: now}
		return
	}
	if dt := n.At.Sub(p.last.At).Seconds(); dt > 0 && n.Accepted >= p.last.Accepted {
		p.rate = float64(n.Accepted-p.last.Accepted) / dt
	}
	p.last, p.seen = n, now
}

func (f *OpsFeed) forgetStaleLocked(now time.Time) {
	for id, p := range f.procs {
		if now.Sub(p.seen) > acceptedStale {
			delete(f.procs, id)
		}
	}
}

// OpsTotals are the deployment's counts as one feed sees them.
type OpsTotals struct {
	// Accepted is the sum of the accepted counts of the ingress processes
	// heard from in the last few seconds (each since it started), and
	// AcceptedPerSecond the sum of their latest rates.
	Accepted          int64
	AcceptedPerSecond float64
	// Ingresses is the number of those processes.
	Ingresses int
	// Events counts the order events seen since this feed started, by
	// CloudEvents type (order.confirmed, order.rejected, ...); Rejected
	// counts the rejections by reason.
	Events   map[string]int64
	Rejected map[string]int64
}

// Totals returns the counts now. The maps are copies.
func (f *OpsFeed) Totals() OpsTotals {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	t := OpsTotals{Events: make(map[string]int64, len(f.events)), Rejected: make(map[string]int64, len(f.reasons))}
	for k, v := range f.events {
		t.Events[k] = v
	}
	for k, v := range f.reasons {
		t.Rejected[k] = v
	}
	for _, p := range f.procs {
		if now.Sub(p.seen) > acceptedStale {
			continue
		}
		t.Ingresses++
		t.Accepted += p.last.Accepted
		if now.Sub(p.seen) <= 4*AcceptedNoteEvery { // a silent process sells nothing
			t.AcceptedPerSecond += p.rate
		}
	}
	return t
}

// PartitionState is a partition's queue and pin, from its consumer's info.
type PartitionState struct {
	Partition  int
	Pending    uint64 // commands not yet delivered (NumPending)
	AckPending int    // delivered, not yet acked (NumAckPending)
	// PinnedClient is the id JetStream gave the worker that holds the
	// partition (the Nats-Pin-Id on its messages), "" when none does;
	// PinnedSince is when it got it.
	PinnedClient string
	PinnedSince  time.Time
	// Worker is the name of the worker process that announced the pin
	// (PinsSubject), "" until one has.
	Worker string
	Err    error // the consumer's info could not be read
}

// partitionsFresh is how long a partition sample serves every caller: the
// operator streams open at once ask JetStream once between them.
const partitionsFresh = 500 * time.Millisecond

// Partitions returns every partition's state in partition order, from its
// consumer's info (one request each, ctx bounding the whole), or the sample
// another caller took less than partitionsFresh ago.
func (f *OpsFeed) Partitions(ctx context.Context) []PartitionState {
	f.partsMu.Lock()
	defer f.partsMu.Unlock()
	if f.parts != nil && time.Since(f.partsAt) < partitionsFresh {
		return append([]PartitionState(nil), f.parts...)
	}
	out := f.samplePartitions(ctx)
	f.parts, f.partsAt = out, time.Now()
	out = append([]PartitionState(nil), out...)
	for i := range out {
		if out[i].PinnedClient != "" {
			out[i].Worker = f.pinWorker(out[i].PinnedClient)
		}
	}
	return out
}

func (f *OpsFeed) samplePartitions(ctx context.Context) []PartitionState {
	out := make([]PartitionState, f.partitions)
	for p := range out {
		out[p].Partition = p
		c, err := f.consumer(ctx, p)
		if err != nil {
			out[p].Err = err
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			out[p].Err = fmt.Errorf("consumer %s: %w", PartitionConsumerName(p), err)
			continue
		}
		out[p].Pending, out[p].AckPending = info.NumPending, info.NumAckPending
		out[p].PinnedClient, out[p].PinnedSince = PinnedClient(info)
	}
	return out
}

// consumer returns partition p's consumer, looked up once.
func (f *OpsFeed) consumer(ctx context.Context, p int) (jetstream.Consumer, error) {
	f.mu.Lock()
	c := f.consumers[p]
	f.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := f.js.Consumer(ctx, CommandStream, PartitionConsumerName(p))
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", PartitionConsumerName(p), err)
	}
	f.mu.Lock()
	f.consumers[p] = c
	f.mu.Unlock()
	return c, nil
}

// PinnedClient returns the client that holds a partition consumer's pin in
// the workers' priority group, and since when: the Nats-Pin-Id that the
// pinned worker sees on its messages. It returns "" when no client is
// pinned.
func PinnedClient(info *jetstream.ConsumerInfo) (id string, since time.Time) {
	if info == nil {
		return "", time.Time{}
	}
	for _, g := range info.PriorityGroups {
		if g.Group == PriorityGroup && g.PinnedClientID != "" {
			return g.PinnedClientID, g.PinnedTS
		}
	}
	return "", time.Time{}
}
