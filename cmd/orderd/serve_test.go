package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// logBuffer collects the JSON log lines of a running orderd.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log lines decoded.
func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// waitFor returns the first log line with msg, waiting up to 30s.
func (b *logBuffer) waitFor(t *testing.T, msg string, done <-chan struct{}) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range b.lines(t) {
			if l["msg"] == msg {
				return l
			}
		}
		select {
		case <-done:
			t.Fatalf("orderd ended before logging %q:\n%s", msg, b.buf.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no log line %q after 30s:\n%s", msg, b.buf.String())
	return nil
}

// proc is an orderd running in the test.
type proc struct {
	logs *logBuffer
	base string // http://host:port
	stop context.CancelFunc
	done chan struct{} // closed when run returned
	err  error         // what run returned, once done is closed
}

// wait waits up to d for run to return and returns its error.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("orderd did not stop within %s", d)
		return nil
	}
}

// startOrderd runs orderd with args until the test ends, and waits until
// its HTTP server listens.
func startOrderd(t *testing.T, args ...string) *proc {
	t.Helper()
	return startOrderdUntil(t, "http listening", args...)
}

// startOrderdUntil runs orderd with args until the test ends, and waits for
// the log line msg, whose addr is the base URL.
func startOrderdUntil(t *testing.T, msg string, args ...string) *proc {
	t.Helper()
	clearEnv(t)
	t.Setenv("JWT_SECRET", testSecret)
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{logs: &logBuffer{}, stop: cancel, done: make(chan struct{})}
	go func() {
		p.err = run(ctx, args, io.Discard, p.logs)
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Error("orderd did not stop within 60s")
		}
	})
	l := p.logs.waitFor(t, msg, p.done)
	p.base = "http://" + l["addr"].(string)
	return p
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// serve starts with the embedded NATS server on a free port, answers
// /healthz and /readyz, and shuts down in the reverse order of start when
// its context ends (as on SIGTERM).
func TestServeStartsAndShutsDownInOrder(t *testing.T) {
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	p := startOrderd(t, "serve",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", "127.0.0.1:0", "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir(),
		"--partitions", "4", "--shutdown-timeout", "5s")
	logs, base := p.logs, p.base

	if l := logs.waitFor(t, "embedded nats listening", p.done); !strings.HasPrefix(l["url"].(string), "nats://127.0.0.1:") {
		t.Errorf("embedded nats url = %v", l["url"])
	}
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d %s", code, body)
	}
	code, body := get(t, base+"/readyz")
	if code != 200 || !strings.Contains(body, `"jetstream":"ok"`) || !strings.Contains(body, `"postgres":"ok"`) || !strings.Contains(body, `"redis":"ok"`) {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := get(t, base+"/metrics"); code != 200 {
		t.Errorf("/metrics = %d", code)
	}
	// One order through every part the process wires: ingress, JetStream,
	// a partition worker, PostgreSQL, the outbox relay and the status hub.
	checkoutConfirmed(t, base)

	p.stop()
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("run = %v, want nil after a graceful shutdown", err)
	}
	// The shutdown steps, in order.
	var steps []string
	for _, l := range logs.lines(t) {
		msg, _ := l["msg"].(string)
		if !strings.HasPrefix(msg, "shutdown:") {
			continue
		}
		if c, ok := l["component"].(string); ok {
			msg += " " + c
		}
		steps = append(steps, msg)
	}
	want := []string{
		"shutdown: signal received, stopping",
		"shutdown: http server draining",
		"shutdown: http server stopped",
		"shutdown: stopping workers (draining their batches)",
		"shutdown: workers stopped",
		"shutdown: closed nats connection",
		"shutdown: closed embedded nats server",
		"shutdown: closed redis",
		"shutdown: closed postgres",
		"shutdown: complete",
	}
	i := 0
	for _, s := range steps {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	if i != len(want) {
		t.Errorf("shutdown steps:\n  %s\nwant, in this order:\n  %s", strings.Join(steps, "\n  "), strings.Join(want, "\n  "))
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the HTTP server still answers after shutdown")
	}
}

// api runs the ingress alone against an external NATS server.
func TestAPIAgainstExternalNATS(t *testing.T) {
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	ns := natstest.Start(t)
	p := startOrderd(t, "api",
		"--database-url", dsn, "--no-migrate", "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--nats-url", ns.ClientURL(), "--http-addr", "127.0.0.1:0")
	if code, body := get(t, p.base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	p.stop()
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("run = %v", err)
	}
	for _, l := range p.logs.lines(t) {
		switch l["msg"] {
		case "embedded nats listening", "workers started":
			t.Errorf("api logged %q", l["msg"])
		}
	}
}

// A port already taken fails the start, and what was opened is closed.
func TestServeFailsCleanlyWhenThePortIsTaken(t *testing.T) {
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	p := startOrderd(t, "serve",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", "127.0.0.1:0", "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir())
	addr := strings.TrimPrefix(p.base, "http://")

	logs := &logBuffer{}
	err := run(context.Background(), []string{"serve",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", addr, "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir()}, io.Discard, logs)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("run on a taken port = %v, want address already in use", err)
	}
	var closed []string
	for _, l := range logs.lines(t) {
		if l["msg"] == "shutdown: closed" {
			closed = append(closed, l["component"].(string))
		}
	}
	if !strings.Contains(strings.Join(closed, ","), "nats connection,embedded nats server,redis,postgres") {
		t.Errorf("closed %q, want nats connection, embedded nats server, redis, postgres", closed)
	}
}

// worker runs the partition workers against an external NATS server and
// serves its metrics and health on METRICS_ADDR.
func TestWorkerRole(t *testing.T) {
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	ns := natstest.Start(t)
	p := startOrderdUntil(t, "metrics listening", "worker",
		"--database-url", dsn, "--no-migrate", "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--nats-url", ns.ClientURL(), "--metrics-addr", "127.0.0.1:0", "--partitions", "4", "--worker-name", "w1")
	p.logs.waitFor(t, "orderd ready", p.done)
	if code, body := get(t, p.base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, body := get(t, p.base+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d", code)
	}
	p.stop()
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("run = %v", err)
	}
	var steps []string
	for _, l := range p.logs.lines(t) {
		if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "shutdown:") {
			steps = append(steps, msg)
		}
	}
	joined := strings.Join(steps, "|")
	if !strings.Contains(joined, "shutdown: workers stopped|shutdown: metrics server stopped") {
		t.Errorf("shutdown steps %q: want the workers stopped, then the metrics server", steps)
	}
}

// checkoutConfirmed creates a SKU and an address, checks out one unit, and
// long-polls the order until it is confirmed.
func checkoutConfirmed(t *testing.T, base string) {
	t.Helper()
	admin, err := auth.Mint([]byte(testSecret), "admin", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	user, err := auth.Mint([]byte(testSecret), "buyer-1", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, token, body string, want int) map[string]any {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
		return out
	}
	sku := call("POST", "/v1/skus", admin, `{"name":"sneaker","price":12900,"currency":"EUR","stock":5}`, 201)["id"].(string)
	addr := call("POST", "/v1/addresses", user, `{"recipient":"Ada","line1":"1 Main St","city":"Berlin","postal_code":"10115","country":"DE"}`, 201)["id"].(string)
	o := call("POST", "/v1/orders", user, `{"address_id":"`+addr+`","payment_method":"card","items":[{"sku_id":"`+sku+`","quantity":1}]}`, 202)
	id := o["order_id"].(string)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := call("GET", "/v1/orders/"+id+"?wait=5s", user, "", 200)
		if got["status"] == "confirmed" {
			break
		}
		if got["status"] != "pending" || time.Now().After(deadline) {
			t.Fatalf("order %s is %v, want confirmed", id, got["status"])
		}
	}
	if s := call("GET", "/v1/skus/"+sku, user, "", 200); s["stock"] != float64(4) {
		t.Errorf("stock after one order = %v, want 4", s["stock"])
	}
}
