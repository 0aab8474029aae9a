package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testSecret = "flashbench-test-secret"

// runBench runs flashbench with args against srv and returns the exit code,
// the decoded JSON line and stderr.
func runBench(t *testing.T, url string, args ...string) (int, map[string]any, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	args = append(args, "--url", url, "--jwt-secret", testSecret, "--json-only")
	code := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr, false)
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("stdout has %d lines, want 1:\n%s\nstderr:\n%s", len(lines), stdout.String(), stderr.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return code, m, stderr.String()
}

func wantNums(t *testing.T, m map[string]any, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if got, _ := m[k].(float64); got != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

func checksOf(m map[string]any) map[string]string {
	out := map[string]string{}
	for k, v := range m["checks"].(map[string]any) {
		out[k] = v.(string)
	}
	return out
}

func TestRunHotSKU(t *testing.T) {
	for _, wait := range []string{"poll", "sse"} {
		t.Run(wait, func(t *testing.T) {
			f, srv := newFakeAPI(t, testSecret)
			f.busyEach = 7
			report := filepath.Join(t.TempDir(), "out.html")
			code, m, stderr := runBench(t, srv.URL, "hot-sku", "--stock", "20", "--buyers", "100", "--concurrency", "8", "--wait", wait, "--report", report)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			wantNums(t, m, map[string]float64{"S": 20, "N": 100, "C": 8, "accepted": 100, "confirmed": 20, "rejected": 80, "lost": 0, "oversold": 0, "errors": 0, "stock_left": 0})
			if r, _ := m["retries"].(float64); r < 10 {
				t.Errorf("retries %v, want at least 10 (every 7th checkout is answered 503 once)", m["retries"])
			}
			if rr := m["reject_reasons"].(map[string]any); rr["out_of_stock"] != 80.0 {
				t.Errorf("reject_reasons %v", rr)
			}
			c := checksOf(m)
			if c[CheckNoLostOrders] != "ok" || c[CheckFairSellout] != "ok" || c[CheckNoOversell] != "ok" {
				t.Errorf("checks %v", c)
			}
			if !strings.HasPrefix(c[CheckDatabase], "skipped") || !strings.HasPrefix(c[CheckEventStream], "skipped") {
				t.Errorf("checks %v: want the database and stream checks skipped", c)
			}
			page, err := os.ReadFile(report)
			if err != nil || !strings.Contains(string(page), "<svg") {
				t.Errorf("report: %v", err)
			}
		})
	}
}

func TestRunOpenModel(t *testing.T) {
	_, srv := newFakeAPI(t, testSecret)
	code, m, stderr := runBench(t, srv.URL, "sold-out", "--stock", "5", "--concurrency", "4", "--rate", "500")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	wantNums(t, m, map[string]float64{"N": 50, "accepted": 50, "confirmed": 5, "rejected": 45, "rate": 500, "sent": 50})
	if d, _ := m["load_s"].(float64); d < 0.09 {
		t.Errorf("load took %vs, want about 0.1s (50 at 500/s)", m["load_s"])
	}
}

func TestRunCartMix(t *testing.T) {
	_, srv := newFakeAPI(t, testSecret)
	code, m, stderr := runBench(t, srv.URL, "cart-mix", "--stock", "10", "--skus", "4", "--buyers", "40", "--concurrency", "8")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	wantNums(t, m, map[string]float64{"M": 4, "accepted": 40, "lost": 0, "oversold": 0})
	if m["confirmed"].(float64)+m["rejected"].(float64) != 40 {
		t.Errorf("confirmed %v + rejected %v != 40", m["confirmed"], m["rejected"])
	}
}

func TestRunPreview(t *testing.T) {
	_, srv := newFakeAPI(t, testSecret)
	code, m, stderr := runBench(t, srv.URL, "preview", "--buyers", "10", "--concurrency", "4", "--duration", "300ms")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if n, _ := m["previews"].(float64); n < 10 {
		t.Errorf("previews %v, want many", m["previews"])
	}
	if m["preview_p99_ms"] == nil || m["preview_per_s"] == nil {
		t.Errorf("no preview latency or rate: %v", m)
	}
	wantNums(t, m, map[string]float64{"errors": 0, "accepted": 0, "lost": 0})
}

func TestRunDetectsOversell(t *testing.T) {
	f, srv := newFakeAPI(t, testSecret)
	f.oversell = true
	code, m, stderr := runBench(t, srv.URL, "hot-sku", "--stock", "3", "--buyers", "10", "--concurrency", "4")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr)
	}
	wantNums(t, m, map[string]float64{"confirmed": 10, "oversold": 7})
	if c := checksOf(m); !strings.HasPrefix(c[CheckNoOversell], "FAILED") || !strings.HasPrefix(c[CheckFairSellout], "FAILED") {
		t.Errorf("checks %v", c)
	}
	if !strings.Contains(stderr, "check "+CheckNoOversell+" FAILED") {
		t.Errorf("stderr does not name the failed check:\n%s", stderr)
	}
}

func TestRunDetectsLostOrders(t *testing.T) {
	f, srv := newFakeAPI(t, testSecret)
	f.neverEach = 4
	code, m, stderr := runBench(t, srv.URL, "hot-sku", "--stock", "30", "--buyers", "12", "--concurrency", "4", "--timeout", "1500ms")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr)
	}
	wantNums(t, m, map[string]float64{"accepted": 12, "lost": 3, "confirmed": 9})
	if c := checksOf(m); !strings.HasPrefix(c[CheckNoLostOrders], "FAILED") {
		t.Errorf("checks %v", c)
	}
}

func TestRunSetupFailure(t *testing.T) {
	_, srv := newFakeAPI(t, "another secret")
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"hot-sku", "--url", srv.URL, "--jwt-secret", testSecret, "--buyers", "3", "--stock", "1"},
		func(string) string { return "" }, &stdout, &stderr, false)
	if code != exitUsage || !strings.Contains(stderr.String(), "401") {
		t.Errorf("exit %d, stderr %q; want 2 and the 401", code, stderr.String())
	}
}

func TestRunInterrupted(t *testing.T) {
	f, srv := newFakeAPI(t, testSecret)
	f.neverEach = 1 // nothing is ever decided
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run(ctx, []string{"hot-sku", "--url", srv.URL, "--jwt-secret", testSecret, "--buyers", "20", "--stock", "5", "--timeout", "1m", "--json-only"},
		func(string) string { return "" }, &stdout, &stderr, false)
	if code != exitFailed || time.Since(start) > 10*time.Second {
		t.Fatalf("exit %d after %s, want 1 soon after the interrupt\n%s", code, time.Since(start), stderr.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(stdout.String()), &m); err != nil {
		t.Fatal(err)
	}
	if c := checksOf(m); !strings.HasPrefix(c[CheckCompleted], "FAILED") {
		t.Errorf("checks %v", c)
	}
}

func TestRunSweepsOrdersNoWaiterSawDecided(t *testing.T) {
	f, srv := newFakeAPI(t, testSecret)
	f.deafPolls = true
	code, m, stderr := runBench(t, srv.URL, "hot-sku", "--stock", "3", "--buyers", "6", "--concurrency", "2", "--waiters", "2", "--timeout", "1s")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	wantNums(t, m, map[string]float64{"accepted": 6, "confirmed": 3, "rejected": 3, "lost": 0, "decided_after_timeout": 6})
}

// TestRunMeasuresServerCPU measures the fake API's process (this test's,
// named by pid) during the sale, and nothing with --server-procs none.
func TestRunMeasuresServerCPU(t *testing.T) {
	_, srv := newFakeAPI(t, testSecret)
	code, m, stderr := runBench(t, srv.URL, "hot-sku", "--stock", "20", "--buyers", "200", "--concurrency", "8",
		"--server-procs", "none", "--server-pids", fmt.Sprint(os.Getpid()))
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	kind := kindOf(filepath.Base(os.Args[0]))
	if len(kind) > 15 {
		kind = kind[:15] // comm is the first 15 bytes of the name
	}
	if _, ok := m["server_cpu_us_per_order"].(float64); !ok {
		t.Errorf("no server_cpu_us_per_order: %v", m)
	}
	split, _ := m["server_cpu_us_per_order_split"].(map[string]any)
	procs, _ := m["server_cpu_processes"].(map[string]any)
	if _, ok := split[kind]; !ok || procs[kind] != 1.0 || m["server_cpu_note"] != nil {
		t.Errorf("split %v processes %v note %v, want %s alone", split, procs, m["server_cpu_note"], kind)
	}

	_, m, _ = runBench(t, srv.URL, "hot-sku", "--stock", "2", "--buyers", "4", "--server-procs", "none")
	for k := range m {
		if strings.HasPrefix(k, "server_cpu") {
			t.Errorf("--server-procs none: %s in the JSON line", k)
		}
	}
}
