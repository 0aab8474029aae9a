package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReadyzHidesDependencyErrors: /readyz answers anyone, so it says
// which dependency is down and nothing of why: the driver's error names
// internal hosts, ports and users. The detail goes to the log.
func TestReadyzHidesDependencyErrors(t *testing.T) {
	t.Parallel()
	const detail = `dial tcp 10.20.30.40:5432: connect: connection refused (user "orderd_app")`
	var logs syncBuffer
	e := newTestEnv(t, func(_ *testEnv, _ *Config, d *Deps) {
		d.Log = slog.New(slog.NewJSONHandler(&logs, nil))
		d.Ready = []Checker{
			{Name: "postgres", Ping: func(context.Context) error { return errors.New(detail) }},
			{Name: "redis", Ping: func(context.Context) error { return nil }},
		}
	})
	resp, body := e.do(t, "GET", "/readyz", "", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; body %s", resp.StatusCode, body)
	}
	var got struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Ready || got.Checks["postgres"] != "down" || got.Checks["redis"] != "ok" {
		t.Errorf("body %s: want ready false, postgres down, redis ok", body)
	}
	for _, leak := range []string{"10.20.30.40", "5432", "orderd_app", "dial tcp"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("the answer %s reveals %q", body, leak)
		}
	}
	if !strings.Contains(logs.String(), "10.20.30.40:5432") || !strings.Contains(logs.String(), `"dependency":"postgres"`) {
		t.Errorf("the log does not hold the detail of postgres's failure:\n%s", logs.String())
	}
}
