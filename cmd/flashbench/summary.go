package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Summary is the one JSON line a run ends with. The first fields are those
// of SPEC 7, in its order; the rest are extras.
type Summary struct {
	Scenario    string  `json:"scenario"`
	S           int64   `json:"S"`
	N           int     `json:"N"`
	C           int     `json:"C"`
	Accepted    int     `json:"accepted"`
	Confirmed   int     `json:"confirmed"`
	Rejected    int     `json:"rejected"`
	Lost        int     `json:"lost"`
	Oversold    int64   `json:"oversold"`
	AcceptPerS  float64 `json:"accept_per_s"`
	DecidedPerS float64 `json:"decided_per_s"`
	AcceptP50   float64 `json:"accept_p50_ms"`
	AcceptP99   float64 `json:"accept_p99_ms"`
	DecideP50   float64 `json:"decide_p50_ms"`
	DecideP99   float64 `json:"decide_p99_ms"`
	// ServerCPUPerOrder is the server's CPU µs per order decided
	// (servercpu.go); omitted when not measured.
	ServerCPUPerOrder *float64 `json:"server_cpu_us_per_order,omitempty"`

	Errors        int               `json:"errors"`  // requests never answered as expected (after retries)
	Retries       int64             `json:"retries"` // requests sent again (429, 503, 409 in flight, transport errors)
	RejectReasons map[string]int    `json:"reject_reasons"`
	Checks        map[string]string `json:"checks"`     // name -> "ok" | "FAILED: ..." | "skipped: ..."
	DurationS     float64           `json:"duration_s"` // from the first checkout to the last decision (or the timeout)

	RunID      string         `json:"run_id"`
	Rate       float64        `json:"rate"` // 0 = closed loop
	M          int            `json:"M,omitempty"`
	Seed       int64          `json:"seed"`
	Wait       string         `json:"wait,omitempty"`
	Sent       int            `json:"sent"`
	NotSent    int            `json:"not_sent"` // buyers that never checked out (the --duration cap)
	Late       int            `json:"late"`     // open model: checkouts started more than --late-after after they were due
	MaxLagMs   float64        `json:"max_lag_ms"`
	LoadS      float64        `json:"load_s"` // the load phase alone
	AcceptP90  float64        `json:"accept_p90_ms"`
	AcceptMax  float64        `json:"accept_max_ms"`
	DecideP90  float64        `json:"decide_p90_ms"`
	DecideMax  float64        `json:"decide_max_ms"`
	SelloutS   float64        `json:"sellout_s"` // from the start to the last confirmation seen
	StockLeft  *int64         `json:"stock_left,omitempty"`
	Unseen     *int           `json:"unseen_orders,omitempty"` // orders of the run's buyers whose 202 the run never saw
	Responses  map[string]int `json:"responses"`               // final answers by status and problem title
	DupEvents  *int           `json:"duplicate_events,omitempty"`
	DupOrders  *int           `json:"duplicate_orders,omitempty"`    // orders beyond one per buyer (database)
	RepeatDec  *int           `json:"repeated_decisions,omitempty"`  // orders decided more than once (database: decision event written twice)
	Leaked     *int           `json:"leaked_reservations,omitempty"` // reservations of decided orders still holding stock
	OpenResv   *int           `json:"open_reservations,omitempty"`   // reservations of decided orders still requested
	MultiDec   *int           `json:"multiple_decisions,omitempty"`  // orders with more than one distinct decision event
	MissingDec *int           `json:"missing_decisions,omitempty"`   // accepted orders without a decision event
	Swept      int            `json:"decided_after_timeout"`         // decisions no waiter saw in time, found by the final sweep
	Previews   int            `json:"previews,omitempty"`
	PreviewPS  float64        `json:"preview_per_s,omitempty"`
	PreviewP50 float64        `json:"preview_p50_ms,omitempty"`
	PreviewP99 float64        `json:"preview_p99_ms,omitempty"`
	ServerCPU                 // its split, seconds and note
}

// JSON returns the summary as one line.
func (s *Summary) JSON() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

// summarize computes the summary of a finished run from what the client saw.
// The database and stream checks are added by the caller.
func summarize(r *runner) *Summary {
	cfg := r.cfg
	s := &Summary{
		Scenario: cfg.Scenario, S: cfg.Stock, N: cfg.Buyers, C: cfg.Concurrency,
		RunID: r.runID, Rate: cfg.Rate, Seed: cfg.Seed,
		Retries:       r.api.retries.Load(),
		RejectReasons: map[string]int{},
		Checks:        map[string]string{},
		Responses:     map[string]int{},
		Sent:          r.schedule.Sent, NotSent: r.schedule.NotSent, Late: r.schedule.Late,
		MaxLagMs:  round2(ms(r.schedule.MaxLag)),
		DurationS: round2(r.end.Sub(r.start).Seconds()),
		LoadS:     round2(r.loadEnd.Sub(r.start).Seconds()),
	}
	if cfg.Scenario == ScenarioCartMix {
		s.M = len(r.skus)
	}
	switch cfg.Scenario {
	case ScenarioPreview:
		return summarizePreview(r, s)
	case ScenarioRawAccept:
		return summarizeRaw(r, s)
	}
	s.Wait = cfg.Wait

	var acc, dec latencies
	var lastAccept, lastDecide, lastConfirm time.Time
	confirmedQty := map[uuid.UUID]int64{}
	for i := range r.outs {
		o := &r.outs[i]
		s.Responses[responseKey(o)]++
		if o.AcceptedAt.IsZero() {
			s.Errors++
			continue
		}
		s.Accepted++
		acc = append(acc, ms(o.AcceptedAt.Sub(o.Due)))
		lastAccept = later(lastAccept, o.AcceptedAt)
		if !o.decided() {
			s.Lost++
			continue
		}
		dec = append(dec, ms(o.DecidedAt.Sub(o.Due)))
		if o.Swept {
			s.Swept++
		} else {
			lastDecide = later(lastDecide, o.DecidedAt) // the sweep's moment says nothing of the rate
		}
		if o.confirmed() {
			s.Confirmed++
			lastConfirm = later(lastConfirm, o.DecidedAt)
			for _, l := range o.Lines {
				confirmedQty[l.SKUID] += l.Quantity
			}
		} else {
			s.Rejected++
			s.RejectReasons[string(o.Reason)]++
		}
	}
	p50, p90, p99, pmax := acc.Quantiles()
	s.AcceptP50, s.AcceptP90, s.AcceptP99, s.AcceptMax = round2(p50), round2(p90), round2(p99), round2(pmax)
	p50, p90, p99, pmax = dec.Quantiles()
	s.DecideP50, s.DecideP90, s.DecideP99, s.DecideMax = round2(p50), round2(p90), round2(p99), round2(pmax)
	if !lastAccept.IsZero() {
		s.AcceptPerS = round2(rate(s.Accepted, lastAccept.Sub(r.start)))
	}
	if !lastDecide.IsZero() {
		s.DecidedPerS = round2(rate(s.Accepted-s.Lost-s.Swept, lastDecide.Sub(r.start)))
	}
	if !lastConfirm.IsZero() {
		s.SelloutS = round2(lastConfirm.Sub(r.start).Seconds())
	}

	// What the client saw, until the database says better.
	for _, k := range r.skus {
		if ex := confirmedQty[k.ID] - k.Stock; ex > 0 {
			s.Oversold += ex
		}
	}
	add := func(c Check) { s.Checks[c.Name] = c.Result() }
	if s.Lost > 0 {
		add(fail(CheckNoLostOrders, "%d of %d accepted orders were still pending %s after the load", s.Lost, s.Accepted, cfg.Timeout))
	} else {
		add(pass(CheckNoLostOrders))
	}
	if s.Oversold > 0 {
		add(fail(CheckNoOversell, "buyers saw %d more units confirmed than the stock", s.Oversold))
	} else {
		add(pass(CheckNoOversell))
	}
	if single(cfg.Scenario) && s.Lost == 0 && s.Errors == 0 {
		want := min(int(cfg.Stock), s.Accepted)
		if s.Confirmed != want {
			add(fail(CheckFairSellout, "%d one-unit orders for a stock of %d: buyers saw %d confirmed, want %d", s.Accepted, cfg.Stock, s.Confirmed, want))
		} else {
			add(pass(CheckFairSellout))
		}
	}
	if n := len(r.stock); n > 0 {
		left := r.stock[n-1].Left
		s.StockLeft = &left
	}
	s.ServerCPUPerOrder, s.ServerCPU = r.cpu.result(s.Confirmed + s.Rejected)
	return s
}

// summarizePreview fills the preview's extras: previews answered 200,
// their rate over the load and their latency.
func summarizePreview(r *runner, s *Summary) *Summary {
	var lat latencies
	for i := range r.outs {
		o := &r.outs[i]
		s.Responses[responseKey(o)]++
		if o.AcceptedAt.IsZero() {
			s.Errors++
			continue
		}
		s.Previews++
		lat = append(lat, ms(o.AcceptedAt.Sub(o.Due)))
	}
	p50, _, p99, _ := lat.Quantiles()
	s.PreviewPS = round2(rate(s.Previews, r.loadEnd.Sub(r.start)))
	s.PreviewP50, s.PreviewP99 = round2(p50), round2(p99)
	return s
}

// single reports whether a scenario sells one SKU one unit at a time.
func single(scenario string) bool {
	return scenario == ScenarioHotSKU || scenario == ScenarioSoldOut
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// responseKey groups final answers: "202", "422 <problem title>",
// "transport: <cause>".
func responseKey(o *outcome) string {
	if o.Response != "" {
		return o.Response
	}
	return fmt.Sprint(o.HTTPStatus)
}

// describeFailure names a request's failure for responseKey.
func describeFailure(err error) string {
	var p *problem
	if errors.As(err, &p) {
		return fmt.Sprintf("%d %s", p.Status, truncate(p.Title, 60))
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:] // the innermost cause: "connection refused"
	}
	return "transport: " + truncate(strings.TrimSuffix(msg, ")"), 60)
}

// addChecks records checks in the summary.
func (s *Summary) addChecks(cs ...Check) {
	for _, c := range cs {
		s.Checks[c.Name] = c.Result()
	}
}

// Failed returns the names of the failed checks, sorted.
func (s *Summary) Failed() []string {
	var out []string
	for name, res := range s.Checks {
		if strings.HasPrefix(res, "FAILED") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
