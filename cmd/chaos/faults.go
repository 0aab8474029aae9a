package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// A fault is one thing that goes wrong during the sale. apply injects it
// and undoes it the way an operator or a supervisor would (restart what
// was killed, SIGCONT what was stopped), and returns when that is done. It
// returns the moment of the fault, from which recovery is measured; the
// moment the fault was surely in effect (the process gone, the port
// closed), after which a probe round must start to count as recovery; and
// what it hit.
type fault struct {
	name  string
	doc   string
	apply func(ctx context.Context, e *env) (at, effective time.Time, target string, err error)
}

// faults is the table of fault kinds; the profiles (main.go) schedule them.
var faults = map[string]fault{
	"worker-kill": {
		name: "worker-kill",
		doc:  "SIGKILL the worker holding most of the scenario's partitions; a supervisor restarts it 2 s later",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			w := e.pickWorker(ctx)
			at := time.Now()
			if err := w.kill(); err != nil {
				return at, at, w.name, err
			}
			eff := time.Now()
			sleep(ctx, 2*time.Second)
			return at, eff, w.name, w.start(ctx, 90*time.Second)
		},
	},
	"worker-stop": {
		name: "worker-stop",
		doc:  "SIGSTOP the worker holding most of the scenario's partitions for 15 s (longer than PIN_TTL 5 s and ACK_WAIT 10 s), then SIGCONT: the other worker takes the partitions over while the stopped one may still be mid-batch",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			w := e.pickWorker(ctx)
			at := time.Now()
			if err := w.signal(syscall.SIGSTOP); err != nil {
				return at, at, w.name, err
			}
			sleep(ctx, e.stopFor)
			return at, at, w.name, w.signal(syscall.SIGCONT)
		},
	},
	"nats-kill": {
		name: "nats-kill",
		doc:  "SIGKILL the NATS server; restart it 1 s later on the same store (sync_interval: always)",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			return killAndRestart(ctx, e.nats, time.Second, 60*time.Second)
		},
	},
	"api-kill": {
		name: "api-kill",
		doc:  "SIGKILL the ingress while checkouts are in flight; restart it 0.5 s later on the same address (clients retry with their Idempotency-Key)",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			return killAndRestart(ctx, e.api, 500*time.Millisecond, 90*time.Second)
		},
	},
	"pg-restart": {
		name: "pg-restart",
		doc:  "restart PostgreSQL: pg_ctlcluster VERSION CLUSTER stop (fast: every connection is cut), then start",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			at := time.Now()
			if err := run(ctx, 2*time.Minute, "pg_ctlcluster", e.pgVersion, e.pgCluster, "stop"); err != nil {
				return at, at, "postgresql", err
			}
			eff := time.Now()
			return at, eff, "postgresql", run(ctx, 2*time.Minute, "pg_ctlcluster", e.pgVersion, e.pgCluster, "start")
		},
	},
	"pg-kill": {
		name: "pg-kill",
		doc:  "SIGKILL the PostgreSQL postmaster; once its backends are gone, start the cluster again (crash recovery)",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			pid, err := e.postmasterPID()
			at := time.Now()
			if err != nil {
				return at, at, "postgresql", err
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return at, at, "postgresql", fmt.Errorf("kill postmaster %d: %w", pid, err)
			}
			return at, time.Now(), "postgresql", e.startPostgres(ctx)
		},
	},
	"redis-restart": {
		name: "redis-restart",
		doc:  "SHUTDOWN Redis (the append-only file is flushed) and start it again as scripts/deps.sh does (appendonly yes)",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			at := time.Now()
			// SHUTDOWN closes the connection: its error says nothing.
			run(ctx, 30*time.Second, "redis-cli", "-u", e.redisURL, "SHUTDOWN")
			if err := waitPort(ctx, e.redisAddr, false, 30*time.Second); err != nil {
				return at, at, "redis", err
			}
			eff := time.Now()
			sleep(ctx, 500*time.Millisecond)
			if err := run(ctx, 2*time.Minute, "bash", e.depsScript); err != nil {
				return at, eff, "redis", err
			}
			return at, eff, "redis", waitPort(ctx, e.redisAddr, true, 30*time.Second)
		},
	},
	"redis-kill": {
		name: "redis-kill",
		doc:  "SIGKILL Redis (appendfsync everysec: up to about a second of writes is lost) and start it again as scripts/deps.sh does",
		apply: func(ctx context.Context, e *env) (time.Time, time.Time, string, error) {
			pid, err := e.redisPID(ctx)
			at := time.Now()
			if err != nil {
				return at, at, "redis", err
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return at, at, "redis", fmt.Errorf("kill redis-server %d: %w", pid, err)
			}
			if err := waitPort(ctx, e.redisAddr, false, 30*time.Second); err != nil {
				return at, at, "redis", err
			}
			eff := time.Now()
			sleep(ctx, 500*time.Millisecond)
			if err := run(ctx, 2*time.Minute, "bash", e.depsScript); err != nil {
				return at, eff, "redis", err
			}
			return at, eff, "redis", waitPort(ctx, e.redisAddr, true, 30*time.Second)
		},
	},
}

// redisPID asks Redis for its process id.
func (e *env) redisPID(ctx context.Context) (int, error) {
	out, err := exec.CommandContext(ctx, "redis-cli", "-u", e.redisURL, "INFO", "server").Output()
	if err != nil {
		return 0, fmt.Errorf("redis-cli INFO server: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("redis-cli INFO server: no process_id")
}

// env is what the faults act on.
type env struct {
	api, nats  *proc
	workers    []*proc
	db         *sql.DB // the run's database (reconnects after PostgreSQL restarts)
	partitions int
	scenario   string // the scenario running: its SKUs' partitions decide which worker to hit
	stopFor    time.Duration
	pgVersion  string
	pgCluster  string
	pgDataDir  string
	redisURL   string
	redisAddr  string
	depsScript string
	turn       int
}

// pickWorker returns the running worker that holds the pins of most of
// the current scenario's partitions (its /metrics gauge
// orderd_partition_pinned), taking turns on a tie.
func (e *env) pickWorker(ctx context.Context) *proc {
	e.turn++
	parts := map[int]bool{}
	rows, err := e.db.QueryContext(ctx, `SELECT id FROM skus WHERE name LIKE $1`, "flashbench % "+e.scenario+" #%")
	if err == nil {
		for rows.Next() {
			var id uuid.UUID
			if rows.Scan(&id) == nil {
				parts[order.Partition(id, e.partitions)] = true
			}
		}
		rows.Close()
	}
	var best *proc
	bestN := -1
	for k := range e.workers {
		w := e.workers[(k+e.turn)%len(e.workers)]
		if w.exited() {
			continue
		}
		n := 0
		for p := range pinnedPartitions(w) {
			if parts[p] || len(parts) == 0 {
				n++
			}
		}
		if n > bestN {
			best, bestN = w, n
		}
	}
	if best == nil {
		return e.workers[0]
	}
	return best
}

var pinnedRE = regexp.MustCompile(`(?m)^orderd_partition_pinned\{partition="(\d+)"\} 1$`)

// pinnedPartitions reads a worker's /metrics for the partitions it holds.
func pinnedPartitions(w *proc) map[int]bool {
	out := map[int]bool{}
	url := ""
	for _, kv := range w.env {
		if v, ok := strings.CutPrefix(kv, "METRICS_ADDR="); ok {
			url = "http://" + v + "/metrics"
		}
	}
	if url == "" {
		return out
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, m := range pinnedRE.FindAllStringSubmatch(string(data), -1) {
		p, _ := strconv.Atoi(m[1])
		out[p] = true
	}
	return out
}

// postmasterPID reads the first line of the cluster's postmaster.pid.
func (e *env) postmasterPID() (int, error) {
	data, err := os.ReadFile(e.pgDataDir + "/postmaster.pid")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// startPostgres starts the cluster after its postmaster was killed: once
// the old backends have noticed and exited (they hold the shared memory),
// pg_ctlcluster start succeeds and PostgreSQL recovers from its WAL.
func (e *env) startPostgres(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		sleep(ctx, 500*time.Millisecond)
		if err = run(ctx, time.Minute, "pg_ctlcluster", e.pgVersion, e.pgCluster, "start"); err == nil {
			return nil
		}
		if strings.Contains(err.Error(), "already running") {
			return nil
		}
	}
	return fmt.Errorf("postgresql did not start again: %w", err)
}

// ensureServices starts PostgreSQL and Redis if a fault (or an interrupted
// run) left them down: other users of the machine need them.
func (e *env) ensureServices() {
	ctx := context.Background()
	if _, err := e.postmasterPID(); err != nil || !portOpen("127.0.0.1:5432") {
		run(ctx, time.Minute, "pg_ctlcluster", e.pgVersion, e.pgCluster, "start")
	}
	if !portOpen(e.redisAddr) {
		run(ctx, 2*time.Minute, "bash", e.depsScript)
	}
}

func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitPort waits until addr accepts connections (open) or refuses them.
func waitPort(ctx context.Context, addr string, open bool, d time.Duration) error {
	deadline := time.Now().Add(d)
	for portOpen(addr) != open {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: not %s after %s", addr, map[bool]string{true: "open", false: "closed"}[open], d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// killAndRestart SIGKILLs p, restarts it after pause, and waits up to
// timeout for it to be ready. It returns when the fault was applied and
// took effect, and p's name.
func killAndRestart(ctx context.Context, p *proc, pause, timeout time.Duration) (time.Time, time.Time, string, error) {
	at := time.Now()
	if err := p.kill(); err != nil {
		return at, at, p.name, err
	}
	eff := time.Now()
	sleep(ctx, pause)
	return at, eff, p.name, p.start(ctx, timeout)
}
