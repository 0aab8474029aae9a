package main

import (
	"context"
	"sync"
	"testing"
	"time"
)

// record runs plan and returns, per request index, when it was due and when
// it started.
func record(t *testing.T, plan Plan, work time.Duration) (ScheduleStats, map[int][2]time.Time, time.Time) {
	t.Helper()
	var mu sync.Mutex
	got := map[int][2]time.Time{}
	start := time.Now().Add(20 * time.Millisecond)
	st := plan.Run(context.Background(), start, func(_ context.Context, i int, due time.Time) {
		began := time.Now()
		mu.Lock()
		got[i] = [2]time.Time{due, began}
		mu.Unlock()
		time.Sleep(work)
	})
	return st, got, start
}

func TestOpenPlanSchedulesAtFixedIntervals(t *testing.T) {
	plan := Plan{N: 20, Rate: 200, Limit: 20, Slack: 50 * time.Millisecond}
	st, got, start := record(t, plan, 0)
	if st.Sent != 20 || st.NotSent != 0 {
		t.Fatalf("sent %d, not sent %d; want 20, 0", st.Sent, st.NotSent)
	}
	for i := range 20 {
		due, began := got[i][0], got[i][1]
		if want := start.Add(time.Duration(i) * 5 * time.Millisecond); !due.Equal(want) {
			t.Errorf("request %d due at +%s, want +%s", i, due.Sub(start), want.Sub(start))
		}
		if began.Before(due) {
			t.Errorf("request %d started %s before it was due", i, due.Sub(began))
		}
	}
	if st.Late != 0 {
		t.Errorf("late = %d with a free generator, want 0 (max lag %s)", st.Late, st.MaxLag)
	}
}

func TestOpenPlanCountsLateWhenInFlightIsFull(t *testing.T) {
	// One slot, 1000/s, each request takes 20 ms: from the second request on
	// each one waits for the slot, starts late, and keeps the time it was
	// due, so its latency includes the wait.
	plan := Plan{N: 6, Rate: 1000, Limit: 1, Slack: 5 * time.Millisecond}
	st, got, start := record(t, plan, 20*time.Millisecond)
	if st.Sent != 6 {
		t.Fatalf("sent %d, want 6", st.Sent)
	}
	if st.Late < 5 {
		t.Errorf("late = %d, want at least 5", st.Late)
	}
	if st.MaxLag < 80*time.Millisecond {
		t.Errorf("max lag %s, want at least 80ms", st.MaxLag)
	}
	for i := range 6 {
		if want := start.Add(time.Duration(i) * time.Millisecond); !got[i][0].Equal(want) {
			t.Errorf("request %d due at +%s, want +%s (latency is measured from when it was due)", i, got[i][0].Sub(start), want.Sub(start))
		}
	}
}

func TestOpenPlanStopsAtDuration(t *testing.T) {
	plan := Plan{N: 100, Rate: 100, Limit: 10, Duration: 45 * time.Millisecond}
	st, _, _ := record(t, plan, 0)
	if st.Sent != 5 || st.NotSent != 95 {
		t.Errorf("sent %d, not sent %d; want 5 (due at 0, 10, 20, 30, 40 ms), 95", st.Sent, st.NotSent)
	}
}

func TestOpenPlanStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	st := Plan{N: 1000, Rate: 100, Limit: 10}.Run(ctx, time.Now(), func(context.Context, int, time.Time) {})
	if st.Sent == 0 || st.Sent > 10 || st.Sent+st.NotSent != 1000 {
		t.Errorf("sent %d, not sent %d after 30ms at 100/s", st.Sent, st.NotSent)
	}
}

func TestClosedPlanRunsEveryRequestWithLimitWorkers(t *testing.T) {
	var mu sync.Mutex
	inFlight, peak := 0, 0
	seen := map[int]bool{}
	st := Plan{N: 50, Limit: 4}.Run(context.Background(), time.Now(), func(_ context.Context, i int, _ time.Time) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		seen[i] = true
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
	})
	if st.Sent != 50 || len(seen) != 50 || st.NotSent != 0 {
		t.Errorf("sent %d, distinct %d, not sent %d; want 50, 50, 0", st.Sent, len(seen), st.NotSent)
	}
	if peak > 4 {
		t.Errorf("%d in flight, want at most 4", peak)
	}
}

func TestClosedPlanUnboundedStopsAtDuration(t *testing.T) {
	st := Plan{Limit: 2, Duration: 30 * time.Millisecond}.Run(context.Background(), time.Now(), func(context.Context, int, time.Time) {
		time.Sleep(5 * time.Millisecond)
	})
	if st.Sent < 6 || st.Sent > 16 {
		t.Errorf("sent %d in 30ms with 2 workers of 5ms, want about 12", st.Sent)
	}
}
