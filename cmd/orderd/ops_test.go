package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// TestListenHTTPLimitsConnections: the ingress's listener holds at most
// HTTP_MAX_CONNS connections; one more waits in the kernel's queue,
// unanswered, until another closes.
func TestListenHTTPLimitsConnections(t *testing.T) {
	t.Parallel()
	ln, err := listenHTTP("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	defer srv.Close()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// answered reports whether a request on c is answered within d.
	answered := func(c net.Conn, d time.Duration) bool {
		t.Helper()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(d))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	a, b := dial(), dial()
	if !answered(a, 30*time.Second) || !answered(b, 30*time.Second) {
		t.Fatal("the first two connections are not served")
	}
	third := dial()
	if answered(third, 500*time.Millisecond) {
		t.Fatal("a third connection was served with HTTP_MAX_CONNS=2")
	}
	a.Close()
	third.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil {
		t.Fatalf("the third connection is not served once the first closed: %v", err)
	}
	resp.Body.Close()
}
