package main

import (
	"context"
	"time"
)

// The raw-accept scenario measures the accept path alone: the buyers of
// hot-sku (one SKU, one unit each, direct checkout with an Idempotency-Key)
// post their checkouts and the run counts the 202s per second, without
// waiting for any decision and without verifying anything. It runs against
// the real service (its ingress ceiling under the same load) and against a
// bare handler that only authenticates, decodes and answers 202
// (benchlimits http), so that the two rates can be compared.

// ScenarioRawAccept posts checkouts and counts 202/s.
const ScenarioRawAccept = "raw-accept"

// measuresOnly reports whether a scenario only measures: no decisions, no
// guarantees to verify.
func measuresOnly(scenario string) bool {
	return scenario == ScenarioPreview || scenario == ScenarioRawAccept
}

// loadRaw is raw-accept's load phase: checkouts only.
func (r *runner) loadRaw(ctx context.Context) {
	plan := Plan{N: len(r.buyers), Rate: r.cfg.Rate, Limit: r.cfg.Concurrency, Duration: r.cfg.Duration, Slack: r.cfg.Slack}
	r.outs = make([]outcome, len(r.buyers))
	r.start = time.Now()
	r.schedule = plan.Run(ctx, r.start, func(ctx context.Context, i int, due time.Time) {
		r.checkoutOnce(ctx, i, due)
	})
	r.loadEnd = time.Now()
	r.end = r.loadEnd
}

// summarizeRaw counts raw-accept's outcomes: accepted (202), errors, the
// accept rate (accepted over the time from the start to the last 202) and
// latency. Nothing is decided, so nothing is lost: the decision fields stay
// zero and no check is made but run_completed.
func summarizeRaw(r *runner, s *Summary) *Summary {
	var acc latencies
	var lastAccept time.Time
	for i := range r.outs {
		o := &r.outs[i]
		if o.Due.IsZero() {
			continue // never sent (the --duration cap, or interrupted)
		}
		s.Responses[responseKey(o)]++
		if o.AcceptedAt.IsZero() {
			s.Errors++
			continue
		}
		s.Accepted++
		acc = append(acc, ms(o.AcceptedAt.Sub(o.Due)))
		lastAccept = later(lastAccept, o.AcceptedAt)
	}
	p50, p90, p99, pmax := acc.Quantiles()
	s.AcceptP50, s.AcceptP90, s.AcceptP99, s.AcceptMax = round2(p50), round2(p90), round2(p99), round2(pmax)
	if !lastAccept.IsZero() {
		s.AcceptPerS = round2(rate(s.Accepted, lastAccept.Sub(r.start)))
	}
	return s
}
