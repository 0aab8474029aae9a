// Package batch groups concurrent calls into one: group commit for any
// store that answers many requests in one round trip as cheaply as one (a
// PostgreSQL query over arrays, a Redis pipeline).
//
// It batches only under load. At most Parallel flushes run at a time;
// while they do, new calls wait, and the next flush takes all of them (up
// to Max). A lone call is flushed at once, alone, so an idle service pays
// no extra latency; a busy one pays one round trip per batch instead of
// one per call.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Flush answers a batch of requests: one response per request, in order,
// or an error that fails them all. ctx is the batch's own (see Timeout),
// not any caller's.
type Flush[Req, Resp any] func(ctx context.Context, reqs []Req) ([]Resp, error)

// Batcher groups the calls of Do into calls of its Flush.
type Batcher[Req, Resp any] struct {
	flush    Flush[Req, Resp]
	max      int
	parallel int
	timeout  time.Duration

	mu      sync.Mutex
	queue   []*call[Req, Resp]
	running int
}

// Config sets a Batcher's limits.
type Config struct {
	Max      int           // most requests in one flush (default 256)
	Parallel int           // flushes running at once (default 2)
	Timeout  time.Duration // how long one flush may take (default 5s)
}

type call[Req, Resp any] struct {
	req  Req
	resp Resp
	err  error
	done chan struct{}
}

// New returns a Batcher that answers with flush.
func New[Req, Resp any](flush Flush[Req, Resp], cfg Config) *Batcher[Req, Resp] {
	if cfg.Max <= 0 {
		cfg.Max = 256
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Batcher[Req, Resp]{flush: flush, max: cfg.Max, parallel: cfg.Parallel, timeout: cfg.Timeout}
}

// Do queues req for the next flush and returns its response. When ctx ends
// first, Do returns ctx's error at once; the request may still be flushed.
func (b *Batcher[Req, Resp]) Do(ctx context.Context, req Req) (Resp, error) {
	c := &call[Req, Resp]{req: req, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	start := b.running < b.parallel
	if start {
		b.running++
	}
	b.mu.Unlock()
	if start {
		go b.run()
	}
	select {
	case <-c.done:
		return c.resp, c.err
	case <-ctx.Done():
		var zero Resp
		return zero, ctx.Err()
	}
}

// run flushes what is queued until the queue is empty.
func (b *Batcher[Req, Resp]) run() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		calls := b.queue[:n:n]
		b.queue = b.queue[n:]
		if len(b.queue) == 0 {
			b.queue = nil // let the backing array go
		}
		b.mu.Unlock()
		b.answer(calls)
	}
}

// answer flushes calls and hands each its response.
func (b *Batcher[Req, Resp]) answer(calls []*call[Req, Resp]) {
	reqs := make([]Req, len(calls))
	for i, c := range calls {
		reqs[i] = c.req
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	resps, err := b.safeFlush(ctx, reqs)
	cancel()
	if err == nil && len(resps) != len(calls) {
		err = fmt.Errorf("batch: flush answered %d of %d requests", len(resps), len(calls))
	}
	for i, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.resp = resps[i]
		}
		close(c.done)
	}
}

// errPanic is what the callers of a flush that panicked get.
var errPanic = errors.New("batch: flush panicked")

func (b *Batcher[Req, Resp]) safeFlush(ctx context.Context, reqs []Req) (resps []Resp, err error) {
	defer func() {
		if p := recover(); p != nil {
			resps, err = nil, fmt.Errorf("%w: %v", errPanic, p)
		}
	}()
	return b.flush(ctx, reqs)
}
