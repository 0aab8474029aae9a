package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Plan says when the load generator sends its requests.
//
// With Rate > 0 it is an open model: request i is due at Start + i/Rate
// whatever happened to the earlier ones, at most Limit run at once, and a
// request that could not start on time is counted as late (its latency is
// still measured from the time it was due, so a slow server is not hidden
// by a generator that politely waits: no coordinated omission). With
// Rate == 0 it is a closed model: Limit workers send back to back and a
// request is due when it is sent.
type Plan struct {
	N        int           // requests to send; 0 = unbounded, until Duration
	Rate     float64       // requests per second; 0 = closed loop
	Limit    int           // requests in flight at most (C)
	Duration time.Duration // no request is due at or after Start+Duration; 0 = no cap
	Slack    time.Duration // a request starting later than this after it was due is late
}

// ScheduleStats is what a plan's run did.
type ScheduleStats struct {
	Sent    int           // requests started
	NotSent int           // requests of N never started (the Duration cap or the context ended)
	Late    int           // requests that started more than Slack after they were due
	MaxLag  time.Duration // the worst delay between due and start
}

// Job sends request i, due at the given time. It runs on its own goroutine
// and should measure latency from due.
type Job func(ctx context.Context, i int, due time.Time)

// Due returns when request i of an open plan is due.
func (p Plan) Due(start time.Time, i int) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / p.Rate))
}

// Run runs the plan from start and returns when every started job has
// returned. Cancelling ctx stops starting new jobs.
func (p Plan) Run(ctx context.Context, start time.Time, job Job) ScheduleStats {
	if p.Limit < 1 {
		p.Limit = 1
	}
	if p.Rate > 0 {
		return p.runOpen(ctx, start, job)
	}
	return p.runClosed(ctx, start, job)
}

func (p Plan) capped(start, due time.Time) bool {
	return p.Duration > 0 && !due.Before(start.Add(p.Duration))
}

func (p Plan) runOpen(ctx context.Context, start time.Time, job Job) ScheduleStats {
	var (
		st    ScheduleStats
		wg    sync.WaitGroup
		slots = make(chan struct{}, p.Limit)
		timer = time.NewTimer(0)
	)
	defer timer.Stop()
	<-timer.C
	for i := 0; p.N == 0 || i < p.N; i++ {
		due := p.Due(start, i)
		if p.capped(start, due) || ctx.Err() != nil {
			break
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				continue // the loop condition ends it
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		lag := time.Since(due)
		if lag > p.Slack {
			st.Late++
		}
		st.MaxLag = max(st.MaxLag, lag)
		st.Sent++
		wg.Add(1)
		go func(i int, due time.Time) {
			defer func() { <-slots; wg.Done() }()
			job(ctx, i, due)
		}(i, due)
	}
	wg.Wait()
	if p.N > 0 {
		st.NotSent = p.N - st.Sent
	}
	return st
}

func (p Plan) runClosed(ctx context.Context, start time.Time, job Job) ScheduleStats {
	var (
		next atomic.Int64
		sent atomic.Int64
		wg   sync.WaitGroup
	)
	for range p.Limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				now := time.Now()
				if p.capped(start, now) {
					return
				}
				i := int(next.Add(1) - 1)
				if p.N > 0 && i >= p.N {
					return
				}
				sent.Add(1)
				job(ctx, i, now)
			}
		}()
	}
	wg.Wait()
	st := ScheduleStats{Sent: int(sent.Load())}
	if p.N > 0 {
		st.NotSent = p.N - st.Sent
	}
	return st
}
