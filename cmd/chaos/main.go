// Command chaos runs flashbench's hot-sku and then cart-mix scenarios
// against a deployment of separate processes (orderd api, two orderd
// workers, a nats-server with JetStream, the local PostgreSQL and Redis)
// on a fresh database, NATS store and Redis prefix, while a schedule of
// faults kills, stops and restarts each of them. Then it checks, with
// flashbench's verifier, that no accepted order was lost, nothing was
// oversold, no order or decision was duplicated and no reservation leaked,
// and prints one JSON report: every fault with its recovery time (from the
// fault until a probe saw orders accepted and confirmed in every partition
// again), the losses, and the peak RSS of each process. It exits 1 on any
// loss or failed check, 2 if the run could not be set up.
//
//	go run ./cmd/chaos -profile ci      # make chaos-ci: every fault kind once, about 3 minutes
//	go run ./cmd/chaos -profile full    # make chaos: S=5000 N=20000, several worker kills
//
// It must run as root (it restarts PostgreSQL and Redis) from the
// repository root, with bin/orderd, bin/flashbench and bin/nats-server
// built (the Makefile targets build them).
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/lib/pq"
	"github.com/redis/go-redis/v9"
)

// step is one entry of a profile's fault schedule: a fault kind, started
// while the scenario runs.
type step struct {
	Scenario string
	Fault    string
}

// scenarioRun is how one flashbench scenario of a profile is driven. Its
// load is an open model at Buyers/LoadS checkouts per second, so that it
// lasts about LoadS whatever the faults do: long enough for the
// scenario's faults.
type scenarioRun struct {
	Name        string
	Stock       int64
	Buyers      int
	LoadS       float64
	Concurrency int
	SKUs        int // cart-mix
}

// profile is a named size of the run and its fault schedule.
type profile struct {
	Scenarios []scenarioRun
	Schedule  []step
}

// profiles: ci runs every fault kind once in about three minutes; full is
// bigger and kills workers several times.
var profiles = map[string]profile{
	"ci": {
		Scenarios: []scenarioRun{
			{Name: "hot-sku", Stock: 1000, Buyers: 2800, LoadS: 70, Concurrency: 64},
			{Name: "cart-mix", Stock: 300, Buyers: 1800, LoadS: 60, Concurrency: 64, SKUs: 16},
		},
		Schedule: []step{
			{"hot-sku", "api-kill"},
			{"hot-sku", "worker-kill"},
			{"hot-sku", "nats-kill"},
			{"hot-sku", "worker-stop"},
			{"hot-sku", "redis-kill"},
			{"cart-mix", "pg-restart"},
			{"cart-mix", "redis-restart"},
			{"cart-mix", "pg-kill"},
			{"cart-mix", "worker-kill"},
		},
	},
	"full": {
		Scenarios: []scenarioRun{
			{Name: "hot-sku", Stock: 5000, Buyers: 20000, LoadS: 140, Concurrency: 256},
			{Name: "cart-mix", Stock: 1000, Buyers: 10000, LoadS: 130, Concurrency: 128, SKUs: 16},
		},
		Schedule: []step{
			{"hot-sku", "worker-kill"},
			{"hot-sku", "api-kill"},
			{"hot-sku", "nats-kill"},
			{"hot-sku", "worker-stop"},
			{"hot-sku", "worker-kill"},
			{"hot-sku", "pg-restart"},
			{"hot-sku", "redis-restart"},
			{"hot-sku", "worker-kill"},
			{"cart-mix", "worker-kill"},
			{"cart-mix", "redis-kill"},
			{"cart-mix", "pg-kill"},
			{"cart-mix", "redis-restart"},
			{"cart-mix", "api-kill"},
			{"cart-mix", "worker-stop"},
			{"cart-mix", "nats-kill"},
			{"cart-mix", "worker-kill"},
			{"cart-mix", "pg-restart"},
		},
	},
}

// FaultReport is one fault as the report shows it.
type FaultReport struct {
	Name       string  `json:"name"`
	Scenario   string  `json:"scenario"`
	Target     string  `json:"target,omitempty"`
	At         string  `json:"at"`   // UTC
	AtS        float64 `json:"at_s"` // seconds since the first scenario's load began
	DurationMS int64   `json:"duration_ms"`
	RecoveryMS int64   `json:"recovery_ms"` // -1: not recovered within the limit
	Slowest    *int    `json:"slowest_partition,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// Report is the JSON the run prints.
type Report struct {
	Profile    string           `json:"profile"`
	OK         bool             `json:"ok"`
	Failures   []string         `json:"failures"`
	Lost       int              `json:"lost"`
	Oversold   int64            `json:"oversold"`
	Duplicates int              `json:"duplicates"`
	Leaked     int              `json:"leaked"`
	Repeated   int              `json:"repeated_decisions"` // orders decided more than once, whole database (order_decisions)
	Faults     []FaultReport    `json:"faults"`
	NotRun     []string         `json:"faults_not_run,omitempty"`
	PeakRSSKB  map[string]int64 `json:"peak_rss_kb"`
	Starts     map[string]int   `json:"starts"`
	Probe      map[string]any   `json:"probe"`
	Reread     *rereadResult    `json:"reread,omitempty"`
	Scenarios  []map[string]any `json:"scenarios"`
	Database   string           `json:"database"`
	LogDir     string           `json:"log_dir"`
	StartedAt  string           `json:"started_at"`
	DurationS  float64          `json:"duration_s"`
	LoadAvg    string           `json:"loadavg"`
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitSetup  = 2
)

type options struct {
	profile     string
	scale       float64
	bin         string
	outDir      string
	pgURL       string
	redisURL    string
	pgVersion   string
	pgCluster   string
	depsScript  string
	jwtSecret   string
	httpPort    int
	natsPort    int
	metricsPort int
	partitions  int
	stopFor     time.Duration
	gap         time.Duration
	keep        bool
	faults      string
	hotStock    int64
	hotBuyers   int
	only        string
}

func main() {
	var o options
	flag.StringVar(&o.profile, "profile", "ci", "ci (every fault kind once, about 3 minutes) or full (bigger, several worker kills)")
	flag.Float64Var(&o.scale, "scale", 1, "multiply the profile's buyers and stock by this")
	flag.StringVar(&o.bin, "bin", "bin", "directory of orderd, flashbench and nats-server")
	flag.StringVar(&o.outDir, "out", "/tmp/orderd-chaos", "directory of the logs and the report")
	flag.StringVar(&o.pgURL, "pg-url", envOr("PG_URL", "postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable"), "PostgreSQL maintenance database: the run creates and drops its own next to it")
	flag.StringVar(&o.redisURL, "redis-url", envOr("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis")
	flag.StringVar(&o.pgVersion, "pg-version", "", "PostgreSQL cluster version for pg_ctlcluster (default: the cluster on port 5432 in pg_lsclusters)")
	flag.StringVar(&o.pgCluster, "pg-cluster", "", "PostgreSQL cluster name for pg_ctlcluster (default: as -pg-version)")
	flag.StringVar(&o.depsScript, "deps", "scripts/deps.sh", "the script that starts PostgreSQL and Redis where they are down")
	flag.StringVar(&o.jwtSecret, "jwt-secret", envOr("JWT_SECRET", "dev-only-secret-change-me-0123456789abcdef"), "JWT secret of the run's orderd")
	flag.IntVar(&o.httpPort, "http-port", 18280, "orderd api's port")
	flag.IntVar(&o.natsPort, "nats-port", 14322, "nats-server's port")
	flag.IntVar(&o.metricsPort, "metrics-port", 19291, "first worker's metrics port (the second: +1)")
	flag.IntVar(&o.partitions, "partitions", 8, "PARTITIONS")
	flag.DurationVar(&o.stopFor, "stop-for", 15*time.Second, "how long worker-stop keeps a worker stopped")
	flag.DurationVar(&o.gap, "gap", 3*time.Second, "pause after a fault recovered before the next")
	flag.BoolVar(&o.keep, "keep", false, "keep the database, the NATS store and the Redis keys")
	flag.StringVar(&o.only, "scenario", "", "run only this scenario of the profile (hot-sku or cart-mix)")
	flag.Int64Var(&o.hotStock, "hot-stock", 0, "S of hot-sku (default: the profile's)")
	flag.IntVar(&o.hotBuyers, "hot-buyers", 0, "N of hot-sku (default: the profile's)")
	flag.StringVar(&o.faults, "faults", "", "replace the profile's schedule: scenario:fault,... (faults: "+faultNames()+")")
	flag.Parse()
	os.Exit(runChaos(o))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chaos %s: %s\n", time.Now().UTC().Format("15:04:05.0"), fmt.Sprintf(format, args...))
}

func runChaos(o options) int {
	prof, ok := profiles[o.profile]
	if !ok {
		logf("unknown profile %q", o.profile)
		return exitSetup
	}
	if o.faults != "" {
		prof.Schedule = nil
		for _, f := range strings.Split(o.faults, ",") {
			sc, name, _ := strings.Cut(strings.TrimSpace(f), ":")
			if _, ok := faults[name]; !ok {
				logf("unknown fault %q in -faults (want scenario:fault; faults: %s)", f, faultNames())
				return exitSetup
			}
			prof.Schedule = append(prof.Schedule, step{sc, name})
		}
	}
	t0 := time.Now()
	runID := fmt.Sprintf("%d", t0.Unix())
	o.outDir = filepath.Join(o.outDir, runID)
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		logf("%v", err)
		return exitSetup
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if os.Geteuid() != 0 {
		logf("must run as root: it restarts PostgreSQL (pg_ctlcluster) and Redis")
		return exitSetup
	}
	if o.pgVersion == "" || o.pgCluster == "" {
		out, err := exec.Command("pg_lsclusters", "-h").Output()
		if err != nil {
			logf("pg_lsclusters: %v (set -pg-version and -pg-cluster)", err)
			return exitSetup
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[2] == "5432" {
				o.pgVersion, o.pgCluster = f[0], f[1]
			}
		}
		if o.pgVersion == "" {
			logf("no PostgreSQL cluster on port 5432 in pg_lsclusters (set -pg-version and -pg-cluster)")
			return exitSetup
		}
	}
	ru, err := url.Parse(o.redisURL)
	if err != nil {
		logf("redis url: %v", err)
		return exitSetup
	}
	e := &env{
		partitions: o.partitions, stopFor: o.stopFor,
		pgVersion: o.pgVersion, pgCluster: o.pgCluster,
		pgDataDir: fmt.Sprintf("/var/lib/postgresql/%s/%s", o.pgVersion, o.pgCluster),
		redisURL:  o.redisURL, redisAddr: ru.Host, depsScript: o.depsScript,
	}
	// Whatever happens, PostgreSQL and Redis run when the orchestrator ends.
	defer e.ensureServices()
	if out, err := exec.Command("pg_lsclusters", "-h", o.pgVersion, o.pgCluster).Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 6 {
			e.pgDataDir = f[5]
		}
	}

	// Redis must keep the carts across its restart: the append-only file.
	if err := ensureAppendOnly(ctx, o.redisURL); err != nil {
		logf("redis: %v", err)
		return exitSetup
	}

	// The run's database, migrated once (the processes run NO_MIGRATE).
	dbName := "chaos_" + runID
	maint, err := sql.Open("postgres", o.pgURL)
	if err != nil {
		logf("%v", err)
		return exitSetup
	}
	defer maint.Close()
	if _, err := maint.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		logf("create database: %v", err)
		return exitSetup
	}
	dsn := withDB(o.pgURL, dbName)
	prefix := "chaos:" + runID + ":"
	natsDir := filepath.Join(o.outDir, "nats")
	defer func() {
		if o.keep {
			logf("kept database %s, NATS store %s, Redis prefix %s", dbName, natsDir, prefix)
			return
		}
		e.ensureServices()
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := maint.ExecContext(c, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)"); err != nil {
			logf("drop database %s: %v", dbName, err)
		}
		os.RemoveAll(natsDir)
		cleanRedis(c, o.redisURL, prefix)
	}()
	if err := run(ctx, 2*time.Minute, filepath.Join(o.bin, "orderd"), "migrate", "--database-url", dsn, "up"); err != nil {
		logf("migrate: %v", err)
		return exitSetup
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		logf("%v", err)
		return exitSetup
	}
	defer db.Close()
	e.db = db

	// The processes, on the ports asked for unless something else holds
	// one: then on a free one.
	o.httpPort, o.natsPort = freePort(o.httpPort), freePort(o.natsPort)
	if m := freePort(o.metricsPort); m != o.metricsPort || !portFree(o.metricsPort+1) {
		o.metricsPort = freePairBase()
	}
	natsConf := filepath.Join(o.outDir, "nats.conf")
	conf := fmt.Sprintf("server_name: chaos\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", o.natsPort, natsDir)
	if err := os.WriteFile(natsConf, []byte(conf), 0o644); err != nil {
		logf("%v", err)
		return exitSetup
	}
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", o.natsPort)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", o.httpPort)
	common := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=" + dsn, "DB_MAX_CONNS=16",
		"REDIS_URL=" + o.redisURL, "REDIS_PREFIX=" + prefix,
		"NATS_URL=" + natsURL, "JWT_SECRET=" + o.jwtSecret,
		// The default JWT secret is the repository's development one,
		// which orderd api takes in development mode only.
		"ORDERD_DEV=true",
		fmt.Sprintf("PARTITIONS=%d", o.partitions), "NO_MIGRATE=true", "LOG_LEVEL=info",
		"SHUTDOWN_TIMEOUT=10s",
	}
	e.nats = &proc{name: "nats-server", bin: filepath.Join(o.bin, "nats-server"), args: []string{"-c", natsConf},
		logPath: filepath.Join(o.outDir, "nats-server.log"), readyLog: "Server is ready"}
	e.api = &proc{name: "api", bin: filepath.Join(o.bin, "orderd"), args: []string{"api"},
		env:     append(append([]string{}, common...), fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", o.httpPort)),
		logPath: filepath.Join(o.outDir, "api.log"), readyURL: apiURL + "/readyz"}
	for i := range 2 {
		name := fmt.Sprintf("worker-%d", i+1)
		maddr := fmt.Sprintf("127.0.0.1:%d", o.metricsPort+i)
		e.workers = append(e.workers, &proc{name: name, bin: filepath.Join(o.bin, "orderd"), args: []string{"worker"},
			env:     append(append([]string{}, common...), "WORKER_NAME="+name, "METRICS_ADDR="+maddr, "PIN_TTL=5s", "ACK_WAIT=10s"),
			logPath: filepath.Join(o.outDir, name+".log"), readyURL: "http://" + maddr + "/readyz"})
	}
	all := append([]*proc{e.nats, e.api}, e.workers...)
	defer func() {
		for _, p := range append(append([]*proc{e.api}, e.workers...), e.nats) {
			p.stop(15 * time.Second)
		}
	}()
	e.nats.env = []string{"PATH=" + os.Getenv("PATH")}
	if err := e.nats.start(ctx, 30*time.Second); err != nil {
		logf("%v", err)
		return exitSetup
	}
	if err := waitPort(ctx, fmt.Sprintf("127.0.0.1:%d", o.natsPort), true, 30*time.Second); err != nil {
		logf("nats: %v", err)
		return exitSetup
	}
	// The workers create the streams; the api needs them.
	for _, p := range append(append([]*proc{}, e.workers...), e.api) {
		if err := p.start(ctx, 90*time.Second); err != nil {
			logf("%v", err)
			return exitSetup
		}
	}
	logf("profile %s: api %s, workers %s and %s, nats %s, database %s, Redis prefix %s, logs in %s",
		o.profile, apiURL, e.workers[0].name, e.workers[1].name, natsURL, dbName, prefix, o.outDir)

	// RSS sampling.
	sampCtx, stopSamp := context.WithCancel(ctx)
	var sampWG sync.WaitGroup
	sampWG.Go(func() {
		for {
			for _, p := range all {
				p.sampleRSS()
			}
			select {
			case <-sampCtx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	})

	api := newAPIClient(apiURL)
	pr, err := setupProbe(ctx, api, []byte(o.jwtSecret), o.partitions, runID)
	if err != nil {
		logf("%v", err)
		stopSamp()
		return exitSetup
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probeWG sync.WaitGroup
	probeWG.Go(func() { pr.run(probeCtx, 500*time.Millisecond, 90*time.Second) })

	rep := &Report{Profile: o.profile, Database: dbName, LogDir: o.outDir, StartedAt: t0.UTC().Format(time.RFC3339),
		PeakRSSKB: map[string]int64{}, Starts: map[string]int{}}
	var loadStart time.Time
	var carried []step
	if o.only != "" {
		var keep []scenarioRun
		for _, sc := range prof.Scenarios {
			if sc.Name == o.only {
				keep = append(keep, sc)
			}
		}
		prof.Scenarios = keep
	}
	for si, sc := range prof.Scenarios {
		if ctx.Err() != nil {
			break
		}
		if sc.Name == "hot-sku" && o.hotStock > 0 {
			sc.Stock = o.hotStock
		}
		if sc.Name == "hot-sku" && o.hotBuyers > 0 {
			sc.Buyers = o.hotBuyers
		}
		sc.Stock = int64(math.Ceil(float64(sc.Stock) * o.scale))
		sc.Buyers = int(math.Ceil(float64(sc.Buyers) * o.scale))
		sched := carried
		for _, s := range prof.Schedule {
			if s.Scenario == sc.Name {
				sched = append(sched, s)
			}
		}
		var res map[string]any
		var left []step
		res, left = runScenario(ctx, o, e, pr, sc, sched, dsn, natsURL, apiURL, &loadStart, rep)
		carried = left
		if si == len(prof.Scenarios)-1 {
			for _, s := range left {
				rep.NotRun = append(rep.NotRun, s.Scenario+"/"+s.Fault)
			}
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	stopProbe()
	probeWG.Wait()
	// A buyer who opens the order page after the sale, on a freshly
	// started ingress: every status must be PostgreSQL's.
	if ctx.Err() == nil {
		e.api.stop(20 * time.Second)
		if err := e.api.start(ctx, 90*time.Second); err != nil {
			rep.Failures = append(rep.Failures, "restart the api for the re-read: "+err.Error())
		} else if rr, err := rereadStatuses(ctx, db, api, []byte(o.jwtSecret)); err != nil {
			rep.Failures = append(rep.Failures, "re-read the statuses: "+err.Error())
		} else {
			rep.Reread = &rr
			logf("re-read %d orders through a restarted api: %d stale at first, %d still stale after %s, %d errors", rr.Orders, rr.StaleFirst, rr.Stale, rereadSettle, rr.Errors)
		}
	}
	if ctx.Err() == nil {
		if n, example, err := repeatedDecisions(ctx, db); err != nil {
			rep.Failures = append(rep.Failures, err.Error())
		} else if rep.Repeated = n; n > 0 {
			logf("%d orders decided more than once (for example %s)", n, example)
		}
	}
	stopSamp()
	sampWG.Wait()
	for _, p := range all {
		p.sampleRSS()
		rep.PeakRSSKB[p.name] = p.peak()
		rep.Starts[p.name] = p.starts
	}
	rounds, failed, lastErr := pr.stats()
	rep.Probe = map[string]any{"rounds": rounds, "failed_rounds": failed, "partitions": o.partitions}
	if lastErr != "" {
		rep.Probe["last_error"] = truncate(lastErr, 300)
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.LoadAvg = strings.TrimSpace(string(data))
	}
	judge(rep, ctx.Err() != nil)
	rep.DurationS = math.Round(time.Since(t0).Seconds()*10) / 10
	out, _ := json.MarshalIndent(rep, "", "  ")
	os.WriteFile(filepath.Join(o.outDir, "report.json"), out, 0o644)
	fmt.Println(string(out))
	if !rep.OK {
		logf("FAILED: %s", strings.Join(rep.Failures, "; "))
		return exitFailed
	}
	logf("ok: %d faults, nothing lost, oversold, duplicated or leaked (%.0f s)", len(rep.Faults), rep.DurationS)
	return exitOK
}

// runScenario runs one flashbench scenario and, while it runs, its faults
// in order, each after the previous one recovered. Faults it could not
// start before flashbench began verifying are returned, for the next
// scenario.
func runScenario(ctx context.Context, o options, e *env, pr *probe, sc scenarioRun, sched []step, dsn, natsURL, apiURL string, loadStart *time.Time, rep *Report) (map[string]any, []step) {
	e.scenario = sc.Name
	rate := float64(sc.Buyers) / sc.LoadS
	args := []string{sc.Name,
		"--url", apiURL, "--jwt-secret", o.jwtSecret,
		"--stock", fmt.Sprint(sc.Stock), "--buyers", fmt.Sprint(sc.Buyers),
		"--concurrency", fmt.Sprint(sc.Concurrency), "--rate", fmt.Sprintf("%.2f", rate),
		"--database-url", dsn, "--nats-url", natsURL,
		"--timeout", "120s", "--report", filepath.Join(o.outDir, sc.Name+".html"),
	}
	if sc.SKUs > 0 {
		args = append(args, "--skus", fmt.Sprint(sc.SKUs))
	}
	logf("%s: flashbench %s", sc.Name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "flashbench"), args...)
	cmd.Env = append(os.Environ(), "JWT_SECRET="+o.jwtSecret)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	errLog, _ := os.Create(filepath.Join(o.outDir, "flashbench-"+sc.Name+".log"))
	defer errLog.Close()
	if err := cmd.Start(); err != nil {
		return map[string]any{"scenario": sc.Name, "error": err.Error()}, sched
	}
	loading := make(chan struct{})
	verifying := make(chan struct{})
	var stderrWG sync.WaitGroup
	stderrWG.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		var l, v bool
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(errLog, line)
			if !l && strings.Contains(line, "; load") {
				l = true
				close(loading)
			}
			if !v && strings.Contains(line, "flashbench: verifying") {
				v = true
				close(verifying)
			}
		}
		if !l {
			close(loading)
		}
		if !v {
			close(verifying)
		}
	})
	var outBuf strings.Builder
	var stdoutWG sync.WaitGroup
	stdoutWG.Go(func() { io.Copy(&outBuf, stdout) })

	<-loading
	began := time.Now()
	if loadStart.IsZero() {
		*loadStart = began
	}
	logf("%s: load began (%d buyers at %.1f/s: about %.0f s)", sc.Name, sc.Buyers, rate, sc.LoadS)
	var left []step
	for i, s := range sched {
		if i == 0 {
			sleep(ctx, o.gap)
		}
		select {
		case <-verifying:
			left = sched[i:]
			logf("%s: flashbench is verifying; %d faults carried over", sc.Name, len(left))
		default:
		}
		if left != nil || ctx.Err() != nil {
			break
		}
		f := faults[s.Fault]
		logf("%s: fault %s", sc.Name, f.name)
		at, eff, target, err := f.apply(ctx, e)
		fr := FaultReport{Name: f.name, Scenario: sc.Name, Target: target, At: at.UTC().Format(time.RFC3339Nano),
			AtS: math.Round(at.Sub(*loadStart).Seconds()*10) / 10, DurationMS: time.Since(at).Milliseconds(), RecoveryMS: -1}
		if err != nil {
			fr.Error = err.Error()
			logf("%s: fault %s: %v", sc.Name, f.name, err)
		}
		// Recovery: the first probe round that started after the fault
		// and saw every partition accept and confirm an order.
		deadline := time.Now().Add(2 * time.Minute)
		for ctx.Err() == nil {
			if d, part, ok := pr.recovery(at, eff); ok {
				fr.RecoveryMS, fr.Slowest = d.Milliseconds(), &part
				break
			}
			if time.Now().After(deadline) {
				break
			}
			sleep(ctx, 100*time.Millisecond)
		}
		logf("%s: fault %s on %s: recovered in %d ms (slowest partition %v)", sc.Name, f.name, target, fr.RecoveryMS, deref(fr.Slowest))
		rep.Faults = append(rep.Faults, fr)
		sleep(ctx, o.gap)
	}
	err := cmd.Wait()
	stdoutWG.Wait()
	stderrWG.Wait()
	res := map[string]any{}
	lines := strings.Split(strings.TrimSpace(outBuf.String()), "\n")
	if json.Unmarshal([]byte(lines[len(lines)-1]), &res) != nil {
		res = map[string]any{"scenario": sc.Name, "error": fmt.Sprintf("flashbench: %v; no JSON line; see %s", err, errLog.Name())}
	} else if err != nil {
		res["exit"] = err.Error()
	}
	logf("%s: flashbench done (%v): accepted %v confirmed %v rejected %v lost %v oversold %v", sc.Name, err, res["accepted"], res["confirmed"], res["rejected"], res["lost"], res["oversold"])
	return res, left
}

// judge fills the totals and the failures.
func judge(rep *Report, interrupted bool) {
	num := func(m map[string]any, k string) float64 {
		v, _ := m[k].(float64)
		return v
	}
	if interrupted {
		rep.Failures = append(rep.Failures, "interrupted")
	}
	for _, s := range rep.Scenarios {
		name, _ := s["scenario"].(string)
		if e, ok := s["error"]; ok {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", name, e))
			continue
		}
		rep.Lost += int(num(s, "lost"))
		rep.Oversold += int64(num(s, "oversold"))
		rep.Duplicates += int(num(s, "duplicate_orders") + num(s, "multiple_decisions"))
		rep.Leaked += int(num(s, "leaked_reservations"))
		if n := int(num(s, "errors")); n > 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %d checkouts never accepted (%v)", name, n, s["responses"]))
		}
		checks, _ := s["checks"].(map[string]any)
		var names []string
		for k := range checks {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if v, _ := checks[k].(string); strings.HasPrefix(v, "FAILED") {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %s %s", name, k, truncate(v, 300)))
			}
		}
	}
	for _, k := range []struct {
		n    int64
		what string
	}{{int64(rep.Lost), "lost"}, {rep.Oversold, "oversold"}, {int64(rep.Duplicates), "duplicates"}, {int64(rep.Leaked), "leaked"}, {int64(rep.Repeated), "repeated_decisions"}} {
		if k.n != 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s = %d", k.what, k.n))
		}
	}
	for _, f := range rep.Faults {
		if f.Error != "" {
			rep.Failures = append(rep.Failures, fmt.Sprintf("fault %s: %s", f.Name, truncate(f.Error, 300)))
		}
		if f.RecoveryMS < 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("fault %s (%s) at %s: the probe saw no recovery within 2 minutes", f.Name, f.Scenario, f.At))
		}
	}
	if r := rep.Reread; r != nil && (r.Stale > 0 || r.Errors > 0) {
		rep.Failures = append(rep.Failures, fmt.Sprintf("re-read after the sale: %d of %d orders show another status through the API than PostgreSQL holds, %d unreadable (%v)", r.Stale, r.Orders, r.Errors, r.Example))
	}
	if len(rep.NotRun) > 0 {
		rep.Failures = append(rep.Failures, "faults not run (the scenarios ended first): "+strings.Join(rep.NotRun, ", "))
	}
	if rep.Failures == nil {
		rep.Failures = []string{}
	}
	rep.OK = len(rep.Failures) == 0
}

// ensureAppendOnly turns Redis's append-only file on if it is off, and
// waits for the rewrite that starts it: carts must survive a restart.
func ensureAppendOnly(ctx context.Context, redisURL string) error {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	v, err := rdb.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		return err
	}
	if v["appendonly"] == "yes" {
		return nil
	}
	logf("redis: appendonly was off; CONFIG SET appendonly yes")
	if err := rdb.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		return err
	}
	re := regexp.MustCompile(`aof_rewrite_in_progress:(\d)`)
	for range 600 {
		info, err := rdb.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if m := re.FindStringSubmatch(info); m != nil && m[1] == "0" && strings.Contains(info, "aof_enabled:1") {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the append-only file did not start within a minute")
}

// cleanRedis deletes the run's keys.
func cleanRedis(ctx context.Context, redisURL, prefix string) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 10000).Result()
		if err != nil {
			return
		}
		if len(keys) > 0 {
			rdb.Unlink(ctx, keys...)
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

// withDB returns the PostgreSQL URL u with its database replaced.
func withDB(u, db string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	pu.Path = "/" + db
	return pu.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// faultNames lists the fault kinds, sorted.
func faultNames() string {
	var names []string
	for n := range faults {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// portFree reports whether 127.0.0.1:port can be listened on.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// freePort returns port if it is free, else one the kernel picks.
func freePort(port int) int {
	if portFree(port) {
		return port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return port
	}
	defer l.Close()
	p := l.Addr().(*net.TCPAddr).Port
	logf("port %d is taken; using %d", port, p)
	return p
}

// freePairBase returns a port p such that p and p+1 are free.
func freePairBase() int {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			break
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if portFree(p + 1) {
			return p
		}
	}
	return 19291
}
