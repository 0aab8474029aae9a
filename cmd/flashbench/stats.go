package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted, which
// must be in ascending order, by the nearest-rank method: the smallest
// value such that at least p percent of the values are less or equal. It
// returns 0 for no values.
func percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	return sorted[min(max(rank, 1), n)-1]
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round2 rounds x to two decimals, for the summary.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// latencies is a set of latencies in milliseconds.
type latencies []float64

// Quantiles returns p50, p90, p99 and the maximum, sorting l in place.
func (l latencies) Quantiles() (p50, p90, p99, maxv float64) {
	slices.Sort(l)
	return percentile(l, 50), percentile(l, 90), percentile(l, 99), percentile(l, 100)
}

// rate returns n per second over d, or 0 for an empty interval.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Second is one second of a run: what completed in it.
type Second struct {
	Accepted int        // checkouts answered 202 (or previews answered) in this second
	Decided  int        // decisions seen in this second
	AcceptQ  [3]float64 // p50, p90, p99 of the accept latency of the requests answered in this second
	DecideQ  [3]float64 // p50, p90, p99 of the decide latency of the decisions seen in this second
}

// StockSample is the stock left, summed over the run's SKUs, at a moment.
type StockSample struct {
	At   time.Duration // since the start of the load
	Left int64
}

// Timeline is a run second by second, for the report's charts.
type Timeline struct {
	Seconds []Second
	Stock   []StockSample
	Span    time.Duration // from the start to the end of the run: the last second may be partial
}

// PerSecond returns the rate of second k given its count: the count itself
// for a full second, scaled up for the last, partial one. It reports false
// for a last second too short to say anything.
func (t Timeline) PerSecond(k, count int) (float64, bool) {
	covered := t.Span.Seconds() - float64(k)
	switch {
	case t.Span == 0 || covered >= 1:
		return float64(count), true
	case covered < 0.25:
		return 0, false
	}
	return float64(count) / covered, true
}

// buildTimeline buckets the outcomes by the second, since start, in which
// they were accepted and decided; the run lasted span.
func buildTimeline(start time.Time, span time.Duration, outs []outcome, stock []StockSample) Timeline {
	var acc, dec []latencies
	bucket := func(b *[]latencies, at time.Time, v float64) {
		k := int(at.Sub(start) / time.Second)
		if k < 0 {
			k = 0
		}
		for len(*b) <= k {
			*b = append(*b, nil)
		}
		(*b)[k] = append((*b)[k], v)
	}
	for i := range outs {
		o := &outs[i]
		if !o.AcceptedAt.IsZero() {
			bucket(&acc, o.AcceptedAt, ms(o.AcceptedAt.Sub(o.Due)))
		}
		if !o.DecidedAt.IsZero() {
			bucket(&dec, o.DecidedAt, ms(o.DecidedAt.Sub(o.Due)))
		}
	}
	n := max(len(acc), len(dec))
	t := Timeline{Seconds: make([]Second, n), Stock: stock, Span: span}
	for k := range n {
		s := &t.Seconds[k]
		if k < len(acc) {
			s.Accepted = len(acc[k])
			p50, p90, p99, _ := acc[k].Quantiles()
			s.AcceptQ = [3]float64{p50, p90, p99}
		}
		if k < len(dec) {
			s.Decided = len(dec[k])
			p50, p90, p99, _ := dec[k].Quantiles()
			s.DecideQ = [3]float64{p50, p90, p99}
		}
	}
	return t
}
