package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"
)

// shedMeter counts every checkout attempt (each POST /v1/orders the client
// sends, retries included) by answer, and times them from the request to
// the response's header: how often the service sheds load (429, 503) and
// how fast it does so, next to how long an admitted attempt (202) takes.
// The client's retries hide this from the per-buyer figures, where a shed
// buyer that came back later counts only once, as accepted.
type shedMeter struct {
	next http.RoundTripper

	mu       sync.Mutex
	attempts int
	shed     []time.Duration // 429 and 503 answers
	n429     int
	n503     int
	admitted []time.Duration // 202 answers
	other    int             // other answers and transport errors
}

// setupConcurrency bounds the buyers set up at once (their addresses and
// carts), whatever --concurrency is: an overload run's generator needs tens
// of thousands of checkouts in flight, and as many setup requests at once
// exhaust the server's file descriptors before the load starts.
const setupConcurrency = 1024

// meterShed wraps the client's transport with a shedMeter.
func meterShed(c *client) *shedMeter {
	m := &shedMeter{next: c.hc.Transport}
	if m.next == nil {
		m.next = http.DefaultTransport
	}
	c.hc.Transport = m
	return m
}

func (m *shedMeter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/orders" {
		return m.next.RoundTrip(req)
	}
	start := time.Now()
	resp, err := m.next.RoundTrip(req)
	d := time.Since(start)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts++
	switch {
	case err != nil:
		m.other++
	case resp.StatusCode == http.StatusTooManyRequests:
		m.n429++
		m.shed = append(m.shed, d)
	case resp.StatusCode == http.StatusServiceUnavailable:
		m.n503++
		m.shed = append(m.shed, d)
	case resp.StatusCode == http.StatusAccepted:
		m.admitted = append(m.admitted, d)
	default:
		m.other++
	}
	return resp, err
}

// ShedStats is the shedMeter's part of the JSON line (key "shed").
type ShedStats struct {
	Attempts     int     `json:"checkout_attempts"` // POST /v1/orders sent, retries included
	Answers429   int     `json:"answers_429"`
	Answers503   int     `json:"answers_503"`
	ShedShare    float64 `json:"shed_share"` // (429 + 503) / attempts
	ShedP50      float64 `json:"shed_p50_ms"`
	ShedP99      float64 `json:"shed_p99_ms"`
	ShedMax      float64 `json:"shed_max_ms"`
	Admitted     int     `json:"answers_202"`
	AdmittedP50  float64 `json:"attempt_202_p50_ms"` // one attempt's latency, without the retries before it
	AdmittedP99  float64 `json:"attempt_202_p99_ms"`
	AdmittedMax  float64 `json:"attempt_202_max_ms"`
	OtherAnswers int     `json:"other_answers"` // other statuses and transport errors
}

// stats summarizes what the meter saw.
func (m *shedMeter) stats() ShedStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := ShedStats{Attempts: m.attempts, Answers429: m.n429, Answers503: m.n503, Admitted: len(m.admitted), OtherAnswers: m.other}
	if m.attempts > 0 {
		st.ShedShare = round3(float64(m.n429+m.n503) / float64(m.attempts))
	}
	st.ShedP50, st.ShedP99, st.ShedMax = quantilesMs(m.shed)
	st.AdmittedP50, st.AdmittedP99, st.AdmittedMax = quantilesMs(m.admitted)
	return st
}

// merge appends the meter's stats to a summary's JSON object as "shed",
// keeping the order of the summary's keys.
func (m *shedMeter) merge(line []byte) []byte {
	line = bytes.TrimSpace(line)
	if m == nil || len(line) < 2 || line[len(line)-1] != '}' {
		return line
	}
	st, err := json.Marshal(m.stats())
	if err != nil {
		return line
	}
	out := append([]byte(nil), line[:len(line)-1]...)
	if len(line) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"shed":`...)
	out = append(out, st...)
	return append(out, '}')
}

// quantilesMs returns the p50, p99 and maximum of ds in milliseconds.
func quantilesMs(ds []time.Duration) (p50, p99, maxMs float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		i = min(max(i, 0), len(s)-1)
		return round1(float64(s[i]) / float64(time.Millisecond))
	}
	return at(0.50), at(0.99), round1(float64(s[len(s)-1]) / float64(time.Millisecond))
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// CloseIdleConnections passes http.Client.CloseIdleConnections through.
func (m *shedMeter) CloseIdleConnections() {
	if c, ok := m.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
