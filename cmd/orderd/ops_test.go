package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/services/ingress"
)

// TestWorkerReadyzHidesDependencyErrors: a worker's /readyz, like the
// ingress's, names the dependency that is down and nothing of why (the
// error names internal hosts).
func TestWorkerReadyzHidesDependencyErrors(t *testing.T) {
	t.Parallel()
	h := opsHandler(prometheus.NewRegistry(), []ingress.Checker{
		{Name: "redis", Ping: func(context.Context) error { return errors.New("dial tcp 10.9.8.7:6379: i/o timeout") }},
		{Name: "postgres", Ping: func(context.Context) error { return nil }},
	}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if strings.Contains(string(body), "10.9.8.7") || !strings.Contains(string(body), `"redis":"down"`) {
		t.Errorf("body %s: want redis down, without the error's detail", body)
	}
}
