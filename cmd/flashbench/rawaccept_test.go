package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestRunRawAccept: raw-accept posts every checkout, counts the 202s (with
// their retries), and never asks for an order's status.
func TestRunRawAccept(t *testing.T) {
	f, fake := newFakeAPI(t, testSecret)
	f.busyEach = 7
	var reads, checkouts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/orders/"):
			reads.Add(1)
		case r.Method == "POST" && r.URL.Path == "/v1/orders":
			checkouts.Add(1)
		}
		fake.Config.Handler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	code, m, stderr := runBench(t, srv.URL, "raw-accept", "--stock", "20", "--buyers", "100", "--concurrency", "8")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	wantNums(t, m, map[string]float64{"S": 20, "N": 100, "C": 8, "accepted": 100, "confirmed": 0, "rejected": 0, "lost": 0, "errors": 0, "decided_per_s": 0})
	if m["scenario"] != "raw-accept" {
		t.Errorf("scenario %v", m["scenario"])
	}
	if a, _ := m["accept_per_s"].(float64); a <= 0 {
		t.Errorf("accept_per_s %v", m["accept_per_s"])
	}
	if r, _ := m["retries"].(float64); r < 10 {
		t.Errorf("retries %v, want at least 10 (every 7th checkout is answered 503 once)", m["retries"])
	}
	if got := checkouts.Load(); got != 100+int64(m["retries"].(float64)) {
		t.Errorf("%d checkouts posted, want 100 + the retries", got)
	}
	if n := reads.Load(); n != 0 {
		t.Errorf("%d order reads: raw-accept must not wait for decisions", n)
	}
	if c := checksOf(m); len(c) != 0 {
		t.Errorf("checks %v, want none", c)
	}
}

// TestSummarizeRaw counts by hand: 202s, failures, never sent, the rate
// over the time to the last 202, the latency from due.
func TestSummarizeRaw(t *testing.T) {
	start := time.Unix(1000, 0)
	r := &runner{cfg: Config{Scenario: ScenarioRawAccept, Stock: 5, Buyers: 6, Concurrency: 2}, api: newClient("http://x", 1), start: start}
	ok := func(due, lat time.Duration) outcome {
		return outcome{Due: start.Add(due), AcceptedAt: start.Add(due + lat), OrderID: uuid.New(), HTTPStatus: 202}
	}
	r.outs = []outcome{
		ok(0, 10*time.Millisecond),
		ok(100*time.Millisecond, 30*time.Millisecond),
		ok(200*time.Millisecond, 20*time.Millisecond),
		ok(1900*time.Millisecond, 100*time.Millisecond), // the last 202 at 2 s
		{Due: start.Add(time.Second), HTTPStatus: 422, Response: "422 invalid"},
		{}, // never sent
	}
	r.loadEnd, r.end = start.Add(3*time.Second), start.Add(3*time.Second)
	s := summarize(r)
	if s.Accepted != 4 || s.Errors != 1 || s.Lost != 0 || s.Confirmed != 0 || s.Rejected != 0 {
		t.Errorf("accepted %d errors %d lost %d confirmed %d rejected %d", s.Accepted, s.Errors, s.Lost, s.Confirmed, s.Rejected)
	}
	if s.AcceptPerS != 2 {
		t.Errorf("accept_per_s %v, want 2 (4 accepted in the 2 s to the last 202)", s.AcceptPerS)
	}
	if s.DecidedPerS != 0 || s.DecideP50 != 0 {
		t.Errorf("decided_per_s %v decide_p50 %v, want 0", s.DecidedPerS, s.DecideP50)
	}
	if s.AcceptP50 != 20 || s.AcceptP99 != 100 || s.AcceptMax != 100 {
		t.Errorf("accept p50 %v p99 %v max %v, want 20, 100, 100", s.AcceptP50, s.AcceptP99, s.AcceptMax)
	}
	if s.Responses["202"] != 4 || s.Responses["422 invalid"] != 1 || len(s.Responses) != 2 {
		t.Errorf("responses %v", s.Responses)
	}
	if len(s.Checks) != 0 {
		t.Errorf("checks %v, want none", s.Checks)
	}
}
