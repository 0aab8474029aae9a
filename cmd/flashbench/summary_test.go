package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// fakeRun returns a finished hot-sku run of 4 buyers for a stock of 2:
// two confirmed, one rejected out_of_stock, one whose checkout failed.
func fakeRun(t *testing.T) *runner {
	t.Helper()
	cfg := Config{Scenario: ScenarioHotSKU, Stock: 2, Buyers: 4, Concurrency: 2, Wait: "poll", Timeout: time.Minute}
	r := newRunner(cfg, newClient("http://127.0.0.1:1", 4))
	sku := uuid.New()
	r.skus = []order.SKU{{ID: sku, Stock: 2}}
	r.start = time.Now()
	at := func(ms int) time.Time { return r.start.Add(time.Duration(ms) * time.Millisecond) }
	line := []order.LineRequest{{SKUID: sku, Quantity: 1}}
	r.outs = []outcome{
		{Lines: line, Due: at(0), AcceptedAt: at(10), DecidedAt: at(100), OrderID: uuid.New(), Status: order.StatusConfirmed, HTTPStatus: 202},
		{Lines: line, Due: at(0), AcceptedAt: at(20), DecidedAt: at(200), OrderID: uuid.New(), Status: order.StatusConfirmed, HTTPStatus: 202},
		{Lines: line, Due: at(500), AcceptedAt: at(530), DecidedAt: at(700), OrderID: uuid.New(), Status: order.StatusRejected, Reason: order.RejectOutOfStock, HTTPStatus: 202},
		{Lines: line, Due: at(500), HTTPStatus: 422, Response: "422 invalid address", Err: "HTTP 422 invalid address"},
	}
	r.loadEnd, r.end = at(600), at(1000)
	r.schedule = ScheduleStats{Sent: 4}
	r.stock = []StockSample{{At: 0, Left: 2}, {At: time.Second, Left: 0}}
	return r
}

func TestSummaryHasTheKeysOfSPEC7(t *testing.T) {
	s := summarize(fakeRun(t))
	var m map[string]any
	if err := json.Unmarshal(s.JSON(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{
		"scenario", "S", "N", "C", "accepted", "confirmed", "rejected", "lost", "oversold",
		"accept_per_s", "decided_per_s", "accept_p50_ms", "accept_p99_ms", "decide_p50_ms", "decide_p99_ms",
		"errors", "retries", "reject_reasons", "checks", "duration_s",
	} {
		if _, ok := m[k]; !ok {
			t.Errorf("summary has no %q: %s", k, s.JSON())
		}
	}
	if n := len(string(s.JSON())); n == 0 || string(s.JSON())[0] != '{' {
		t.Errorf("not one JSON object: %s", s.JSON())
	}
}

func TestSummarize(t *testing.T) {
	s := summarize(fakeRun(t))
	if s.Accepted != 3 || s.Confirmed != 2 || s.Rejected != 1 || s.Lost != 0 || s.Errors != 1 || s.Oversold != 0 {
		t.Errorf("accepted %d confirmed %d rejected %d lost %d errors %d oversold %d, want 3 2 1 0 1 0",
			s.Accepted, s.Confirmed, s.Rejected, s.Lost, s.Errors, s.Oversold)
	}
	if s.RejectReasons["out_of_stock"] != 1 {
		t.Errorf("reject reasons %v", s.RejectReasons)
	}
	if s.Responses["202"] != 3 || s.Responses["422 invalid address"] != 1 {
		t.Errorf("responses %v", s.Responses)
	}
	// Accept latencies 10, 20, 30 ms; decide latencies 100, 200, 200 ms.
	if s.AcceptP50 != 20 || s.AcceptP99 != 30 || s.DecideP50 != 200 || s.DecideP99 != 200 {
		t.Errorf("accept p50 %g p99 %g decide p50 %g p99 %g", s.AcceptP50, s.AcceptP99, s.DecideP50, s.DecideP99)
	}
	// 3 accepted by +530 ms; 3 decided by +700 ms.
	if s.AcceptPerS != round2(3/0.53) || s.DecidedPerS != round2(3/0.7) {
		t.Errorf("accept/s %g decided/s %g", s.AcceptPerS, s.DecidedPerS)
	}
	if s.DurationS != 1 || s.SelloutS != 0.2 {
		t.Errorf("duration %g sellout %g", s.DurationS, s.SelloutS)
	}
	if s.Checks[CheckNoLostOrders] != "ok" || s.Checks[CheckNoOversell] != "ok" {
		t.Errorf("checks %v", s.Checks)
	}
	if len(s.Failed()) != 0 {
		t.Errorf("failed %v", s.Failed())
	}
}

func TestSummarizeLostAndOversold(t *testing.T) {
	r := fakeRun(t)
	r.outs[2].Status, r.outs[2].Reason = order.StatusConfirmed, "" // a third unit of two
	r.outs = append(r.outs, outcome{Lines: r.outs[0].Lines, Due: r.start, AcceptedAt: r.start.Add(time.Millisecond), OrderID: uuid.New(), HTTPStatus: 202})
	s := summarize(r)
	if s.Lost != 1 || s.Oversold != 1 {
		t.Fatalf("lost %d oversold %d, want 1 1", s.Lost, s.Oversold)
	}
	got := s.Failed()
	if len(got) != 2 || got[0] != CheckNoLostOrders || got[1] != CheckNoOversell {
		t.Errorf("failed checks %v, want [%s %s]", got, CheckNoLostOrders, CheckNoOversell)
	}
}

func TestSummarizeUnfairSellout(t *testing.T) {
	r := fakeRun(t)
	r.outs = r.outs[1:3] // one confirmed, one rejected: but the stock was 2
	s := summarize(r)
	if s.Checks[CheckFairSellout] == "ok" {
		t.Errorf("%s = ok for 1 confirmed of 2 accepted and a stock of 2", CheckFairSellout)
	}
}
