// Command flashbench is the load generator and checker of the flash-sale
// order processor (SPEC 7). It drives a running orderd over HTTP exactly as
// real clients do: it mints a JWT for each of N distinct buyers, creates the
// SKUs and addresses (and carts) through the API, checks out with
// Idempotency-Keys in a closed loop of C workers or at a fixed arrival rate
// (an open model, so that a slow server cannot hide behind a polite
// generator), and waits for every order's decision by long poll or SSE.
// Then it verifies the guarantees of SPEC 5 in PostgreSQL and the
// ORDER_EVENTS stream, prints one JSON line, and exits 1 if a check failed.
//
//	flashbench hot-sku --url http://127.0.0.1:8080 --jwt-secret s3cret \
//	    --stock 100 --buyers 1000 --concurrency 50 \
//	    --database-url postgres://... --nats-url nats://127.0.0.1:4222 --report out.html
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/uuid"
	_ "github.com/lib/pq" // the PostgreSQL driver
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/order"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a check failed
	exitUsage  = 2 // bad flags, or the run could not be set up
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// run is flashbench from the command line to the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, tty bool) int {
	if len(args) > 0 && args[0] == "median" {
		return runMedian(args[1:], stdout, stderr)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "flashbench: %v\n", err)
		return exitUsage
	}
	logf := func(format string, args ...any) {
		if !cfg.JSONOnly {
			fmt.Fprintf(stderr, "flashbench: "+format+"\n", args...)
		}
	}

	api := newClient(cfg.URL, cfg.Concurrency+cfg.Waiters+8)
	shed := meterShed(api) // 429/503 answers and their latency (shed.go)
	defer api.close()
	r := newRunner(cfg, api)
	since := time.Now().Add(-5 * time.Second) // the events of this run, give or take clock skew

	logf("run %s: %s against %s, S=%d N=%d C=%d rate=%g; setting up %d buyers", r.runID, cfg.Scenario, cfg.URL, cfg.Stock, cfg.Buyers, cfg.Concurrency, cfg.Rate, cfg.Buyers)
	setupStart := time.Now()
	if err := r.setup(ctx); err != nil {
		fmt.Fprintf(stderr, "flashbench: setup: %v\n", err)
		return exitUsage
	}
	logf("setup done in %s; load", time.Since(setupStart).Round(time.Millisecond))

	var bar *progress
	if tty && !cfg.JSONOnly {
		max, unit := int64(len(r.buyers)), "orders"
		if cfg.Scenario == ScenarioPreview {
			max, unit = -1, "previews"
		}
		bar = startProgress(stderr, max, unit, func() (int64, string) {
			a, d, f := r.accepted.Load(), r.decided.Load(), r.failed.Load()
			if cfg.Scenario == ScenarioPreview {
				return a + f, fmt.Sprintf("previews %d errors %d", a, f)
			}
			return d + f, fmt.Sprintf("accepted %d decided %d errors %d stock %d", a, d, f, r.lastStock.Load())
		})
	}
	r.load(ctx)
	bar.finish()

	s := summarize(r)
	if r.cpu != nil {
		logf("%s", describeServerCPU(s.ServerCPUPerOrder, s.ServerCPU))
	}
	switch {
	case ctx.Err() != nil:
		s.addChecks(fail(CheckCompleted, "interrupted: the guarantees were not verified"))
	case !measuresOnly(cfg.Scenario):
		verify(ctx, cfg, r, s, since, logf)
	}

	if cfg.Report != "" {
		if err := writeReport(cfg.Report, s, buildTimeline(r.start, r.end.Sub(r.start), r.outs, r.stock)); err != nil {
			fmt.Fprintf(stderr, "flashbench: %v\n", err)
		} else {
			logf("report written to %s", cfg.Report)
		}
	}
	fmt.Fprintf(stdout, "%s\n", shed.merge(s.JSON()))
	if failed := s.Failed(); len(failed) > 0 {
		for _, name := range failed {
			fmt.Fprintf(stderr, "flashbench: check %s %s\n", name, s.Checks[name])
		}
		return exitFailed
	}
	return exitOK
}

// verify runs the database and event-stream checks that the configuration
// allows and records them in s.
func verify(ctx context.Context, cfg Config, r *runner, s *Summary, since time.Time, logf func(string, ...any)) {
	accepted := make(map[uuid.UUID]order.Status, s.Accepted)
	ids := make([]uuid.UUID, 0, s.Accepted)
	for i := range r.outs {
		if o := &r.outs[i]; o.OrderID != uuid.Nil {
			accepted[o.OrderID] = o.Status
			ids = append(ids, o.OrderID)
		}
	}
	skus := make([]uuid.UUID, len(r.skus))
	for i, k := range r.skus {
		skus[i] = k.ID
	}

	if cfg.DatabaseURL == "" {
		s.addChecks(skip(CheckDatabase, "no --database-url"))
	} else {
		logf("verifying the database")
		rep, err := verifyDatabase(ctx, cfg.DatabaseURL, DBScope{
			SKUs: skus, UserPrefix: r.userPrefix(), Accepted: ids,
			SingleSKU: single(cfg.Scenario), UnitQty: 1,
		})
		if err != nil {
			s.addChecks(fail(CheckDatabase, "%v", err))
		} else {
			s.addChecks(rep.Checks...)
			s.Oversold = rep.Oversold
			s.StockLeft, s.Unseen = &rep.StockLeft, &rep.Unseen
			s.DupOrders, s.Leaked, s.OpenResv = &rep.DupOrders, &rep.Leaked, &rep.Open
			s.RepeatDec = &rep.RepeatedDecisions
		}
	}

	if cfg.NATSURL == "" {
		s.addChecks(skip(CheckEventStream, "no --nats-url"))
		return
	}
	logf("verifying the %d decision events", len(accepted))
	rep, err := verifyStream(ctx, cfg.NATSURL, EventScope{Accepted: accepted, Since: since, Wait: cfg.Timeout})
	if err != nil {
		s.addChecks(fail(CheckEventStream, "%v", err))
		return
	}
	s.addChecks(rep.Checks...)
	s.DupEvents = &rep.Duplicates
	s.MultiDec, s.MissingDec = &rep.Multiple, &rep.Missing
}

func verifyDatabase(ctx context.Context, dsn string, scope DBScope) (DBReport, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return DBReport{}, fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return verifyDBSettled(ctx, db, scope, dbSettle)
}

// dbSettle is how long the database checks are repeated while one fails:
// releases and decisions still on their way through the outbox settle.
const dbSettle = 30 * time.Second

func verifyStream(ctx context.Context, url string, scope EventScope) (EventReport, error) {
	nc, err := nats.Connect(url, nats.Name("flashbench"))
	if err != nil {
		return EventReport{}, fmt.Errorf("connect nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return EventReport{}, fmt.Errorf("jetstream: %w", err)
	}
	return verifyEvents(ctx, js, scope)
}
