package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	tests := []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"empty", nil, 50, 0},
		{"one", []float64{7}, 99, 7},
		{"p50 of 1..100", hundred, 50, 50},
		{"p99 of 1..100", hundred, 99, 99},
		{"p100 is the max", hundred, 100, 100},
		{"tiny p is the min", hundred, 0.1, 1},
		{"p50 of four", []float64{1, 2, 3, 4}, 50, 2},
		{"p75 of four", []float64{1, 2, 3, 4}, 75, 3},
		{"p99 of ten is the max", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.xs, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %g) = %g, want %g", tt.xs, tt.p, got, tt.want)
			}
		})
	}
}

func TestQuantilesSorts(t *testing.T) {
	l := latencies{5, 1, 4, 2, 3}
	p50, p90, p99, pmax := l.Quantiles()
	if p50 != 3 || p90 != 5 || p99 != 5 || pmax != 5 {
		t.Errorf("quantiles = %g %g %g %g, want 3 5 5 5", p50, p90, p99, pmax)
	}
}

func TestBuildTimeline(t *testing.T) {
	start := time.Now()
	at := func(d time.Duration) time.Time { return start.Add(d) }
	outs := []outcome{
		{Due: at(0), AcceptedAt: at(10 * time.Millisecond), DecidedAt: at(1500 * time.Millisecond)},
		{Due: at(100 * time.Millisecond), AcceptedAt: at(130 * time.Millisecond), DecidedAt: at(1200 * time.Millisecond)},
		{Due: at(1100 * time.Millisecond), AcceptedAt: at(1150 * time.Millisecond)}, // lost
		{Due: at(1100 * time.Millisecond)}, // failed
		{Due: at(2000 * time.Millisecond), AcceptedAt: at(2900 * time.Millisecond), DecidedAt: at(3100 * time.Millisecond)},
	}
	tl := buildTimeline(start, 3500*time.Millisecond, outs, nil)
	if len(tl.Seconds) != 4 {
		t.Fatalf("%d seconds, want 4", len(tl.Seconds))
	}
	wantAcc := []int{2, 1, 1, 0}
	wantDec := []int{0, 2, 0, 1}
	for k, s := range tl.Seconds {
		if s.Accepted != wantAcc[k] || s.Decided != wantDec[k] {
			t.Errorf("second %d: accepted %d decided %d, want %d %d", k, s.Accepted, s.Decided, wantAcc[k], wantDec[k])
		}
	}
	if got := tl.Seconds[0].AcceptQ; got != [3]float64{10, 30, 30} {
		t.Errorf("second 0 accept quantiles %v, want [10 30 30]", got)
	}
	if got := tl.Seconds[1].DecideQ; got != [3]float64{1100, 1500, 1500} {
		t.Errorf("second 1 decide quantiles %v, want [1100 1500 1500]", got)
	}
}

func TestPerSecondScalesThePartialLastSecond(t *testing.T) {
	tl := Timeline{Span: 2500 * time.Millisecond}
	tests := []struct {
		k, count int
		want     float64
		ok       bool
	}{
		{0, 100, 100, true},
		{1, 100, 100, true},
		{2, 50, 100, true}, // half a second
	}
	for _, tt := range tests {
		if got, ok := tl.PerSecond(tt.k, tt.count); got != tt.want || ok != tt.ok {
			t.Errorf("PerSecond(%d, %d) = %g, %v; want %g, %v", tt.k, tt.count, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := (Timeline{Span: 2100 * time.Millisecond}).PerSecond(2, 3); ok {
		t.Error("a last second of 100ms is plotted")
	}
}
