package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// TestTwoWorkerProcessesOneKilled runs the deployment of SPEC 6 as real OS
// processes: `orderd api` and two `orderd worker` processes on one NATS
// server. 2,000 buyers rush a SKU with stock 200; while their checkouts
// flow, the worker that holds the SKU's partition is killed with SIGKILL.
// The other takes the partition over when the pin expires, and every
// accepted order is decided within a minute: exactly 200 confirmed, the
// stock at 0, one order per checkout in PostgreSQL, one decision event per
// order.
func TestTwoWorkerProcessesOneKilled(t *testing.T) {
	t.Parallel()
	const stock, buyers, concurrency, killAfter = 200, 2000, 100, 500
	t0 := time.Now()
	bin := orderdBinary(t)
	t.Logf("orderd built in %s", time.Since(t0).Round(time.Millisecond))
	dsn, db := pgtest.New(t) // migrated: the processes run with NO_MIGRATE
	checkDecidedOnceAtEnd(t, db)
	rs, prefix := redistest.New(t)
	unlinkOnCleanup(t, rs, prefix)
	ns := natstest.StartDir(t, t.TempDir())

	common := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=" + dsn,
		"DB_MAX_CONNS=8",
		"REDIS_URL=" + redistest.URL(),
		"REDIS_PREFIX=" + prefix,
		"NATS_URL=" + ns.ClientURL(),
		"JWT_SECRET=" + testSecret,
		"PARTITIONS=4",
		"NO_MIGRATE=true",
		"LOG_LEVEL=info",
		"SHUTDOWN_TIMEOUT=5s",
	}
	apiProc := startProc(t, bin, "api", append(common, "HTTP_ADDR=127.0.0.1:0", "PUBLISH_TIMEOUT=10s"), "api")
	addr, _ := apiProc.waitLog(t, "http listening", 30*time.Second)["addr"].(string)
	api := newAPI(t, "http://"+addr)
	workerEnv := func(name string) []string {
		return append(common, "PIN_TTL=2s", "ACK_WAIT=5s", "METRICS_ADDR=", "WORKER_NAME="+name)
	}
	doomed := startProc(t, bin, "worker-1", workerEnv("worker-1"), "worker")
	doomed.waitLog(t, "orderd ready", 30*time.Second)

	// Only worker-1 runs: the restock that completes the stock goes through
	// the SKU's partition and pins it to worker-1, the process to kill.
	sku := api.createSKU(t, "flash console", stock-1)
	api.mustCall(t, "POST", "/v1/skus/"+sku.ID.String()+"/restock", mint(t, "admin", true), map[string]int64{"quantity": 1}, 202, nil)
	wantSKU(t, api, sku.ID, stock, 0, 1)
	survivor := startProc(t, bin, "worker-2", workerEnv("worker-2"), "worker")
	survivor.waitLog(t, "orderd ready", 30*time.Second)

	t.Logf("processes ready, SKU pinned to worker-1 after %s", time.Since(t0).Round(time.Millisecond))
	bs := api.newBuyers(t, buyers)
	t.Logf("%d buyers with an address after %s", buyers, time.Since(t0).Round(time.Millisecond))

	// The checkouts, concurrency at a time; worker-1 dies after killAfter
	// of them were accepted.
	start := time.Now()
	accs := make([]accepted, buyers)
	errs := make([]error, buyers)
	var next, done atomic.Int64
	killed := make(chan time.Time, 1)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= buyers {
					return
				}
				b := bs[i]
				accs[i], _, errs[i] = api.checkout(context.Background(), b, directBody(b, sku.ID, 1), "console-"+b.ID)
				if done.Add(1) == killAfter {
					doomed.kill(t)
					killed <- time.Now()
				}
			}
		})
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d checkouts were not accepted", failed, buyers)
	}
	killedAt := <-killed
	t.Logf("%d checkouts accepted in %s; worker-1 killed after %s", buyers, time.Since(start).Round(time.Millisecond), killedAt.Sub(start).Round(time.Millisecond))
	select {
	case <-doomed.done:
	case <-time.After(10 * time.Second):
		t.Fatal("worker-1 still runs 10s after SIGKILL")
	}

	decided := awaitAll(t, api, bs, accs, 60*time.Second)
	t.Logf("%d orders decided %s after the first checkout", buyers, time.Since(start).Round(time.Millisecond))
	checkHotSKUDecisions(t, decided, sku, stock)
	if got := api.sku(t, sku.ID); got.Stock != 0 || got.UnitsSold != stock {
		t.Errorf("SKU after the sale: stock %d, units_sold %d; want 0 and %d", got.Stock, got.UnitsSold, stock)
	}
	checkDatabase(t, db, decided, sku.ID, stock)
	var before, after int
	if err := db.QueryRow(`SELECT count(*) FILTER (WHERE decided_at < $1), count(*) FILTER (WHERE decided_at >= $1) FROM orders`, killedAt).Scan(&before, &after); err != nil {
		t.Fatal(err)
	}
	t.Logf("orders decided before the kill (by worker-1): %d; after it (by worker-2): %d", before, after)

	nc, err := natsbus.Connect(ns.ClientURL(), "e2e-checks", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	want := statuses(decided)
	checkOneDecisionEach(t, awaitDecisionEvents(t, js, want, 30*time.Second), want)

	if survivor.exited() {
		t.Errorf("worker-2 exited: %v", survivor.err)
	}
}

// proc is an orderd process the test started. Its stdout and stderr go to
// a file whose tail the test prints if it fails.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // what Wait returned, once done is closed
}

// startProc starts bin with args and exactly the environment env (nothing
// inherited), killed when the test ends.
func startProc(t *testing.T, bin, name string, env []string, args ...string) *proc {
	t.Helper()
	return startProcWith(t, bin, name, env, nil, args...)
}

// startProcWith is startProc, calling prep (if not nil) on the command
// before it starts.
func startProcWith(t *testing.T, bin, name string, env []string, prep func(*exec.Cmd), args ...string) *proc {
	t.Helper()
	p := &proc{name: name, logPath: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if prep != nil {
		prep(p.cmd)
	}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, p.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("%s (pid %d, %v) log %s, last lines:\n%s", name, p.cmd.Process.Pid, p.err, p.logPath, tail(p.log(), 40))
		}
	})
	return p
}

// kill sends SIGKILL, unless the process has exited.
func (p *proc) kill(t *testing.T) {
	if p.exited() {
		return
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill %s: %v", p.name, err)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// log returns what the process wrote so far.
func (p *proc) log() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

// waitLog waits up to d for the JSON log line whose msg is msg, and
// returns it. It fails the test if the process exits first or d passes.
func (p *proc) waitLog(t *testing.T, msg string, d time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sc := bufio.NewScanner(bytes.NewReader([]byte(p.log())))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
				return line
			}
		}
		switch {
		case p.exited():
			t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.err, msg, tail(p.log(), 40))
		case time.Now().After(deadline):
			t.Fatalf("%s did not log %q within %s:\n%s", p.name, msg, d, tail(p.log(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
