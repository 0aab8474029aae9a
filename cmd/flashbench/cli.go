package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Scenarios.
const (
	ScenarioHotSKU  = "hot-sku"
	ScenarioCartMix = "cart-mix"
	ScenarioSoldOut = "sold-out"
	ScenarioPreview = "preview"
)

// defaultURL is where orderd listens by default (HTTP_ADDR :8080).
const defaultURL = "http://127.0.0.1:8080"

var scenarios = []string{ScenarioHotSKU, ScenarioCartMix, ScenarioSoldOut, ScenarioPreview, ScenarioRawAccept}

// Config is one run's settings, from flags and environment.
type Config struct {
	Scenario    string
	URL         string
	JWTSecret   string
	Stock       int64         // S: units per SKU
	Buyers      int           // N: distinct users
	Concurrency int           // C: checkouts (or previews) in flight at most
	Waiters     int           // orders whose status is awaited at once
	Rate        float64       // checkouts per second, open model; 0 = closed loop with C workers
	Duration    time.Duration // cap on the load phase (the preview's length)
	Seed        int64         // carts and buyer order
	SKUs        int           // M: SKUs of cart-mix
	DatabaseURL string
	NATSURL     string
	Report      string        // HTML report file
	Wait        string        // "poll" or "sse"
	Timeout     time.Duration // how long after the load the run waits for final statuses
	JSONOnly    bool
	Hold        time.Duration // payment hold of the SKUs created; 0 = the server's default
	Slack       time.Duration // a checkout starting later than this after it was due is late
	ServerProcs string        // comms of the server's processes, for server_cpu_us_per_order
	ServerPIDs  string        // the server's processes by pid (and their descendants), instead
}

// defaultWaiters is the least number of orders awaited at once by
// default: each holds a connection in a long poll or an event stream, and
// too few let slow orders hide the decisions of others until the sweep.
const defaultWaiters = 1024

// defaults per scenario, for flags that were not given.
func (c *Config) applyDefaults(set map[string]bool) {
	if !set["stock"] {
		switch c.Scenario {
		case ScenarioHotSKU, ScenarioRawAccept:
			c.Stock = 10000
		case ScenarioPreview:
			c.Stock = 1_000_000
		default:
			c.Stock = 1000
		}
	}
	if !set["buyers"] {
		switch c.Scenario {
		case ScenarioHotSKU, ScenarioRawAccept:
			c.Buyers = 50000
		case ScenarioSoldOut:
			c.Buyers = int(10 * c.Stock)
		case ScenarioCartMix:
			c.Buyers = 10000
		case ScenarioPreview:
			c.Buyers = 1000
		}
	}
	if !set["duration"] && c.Scenario == ScenarioPreview {
		c.Duration = 10 * time.Second
	}
	if !set["waiters"] {
		c.Waiters = max(2*c.Concurrency, defaultWaiters)
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !contains(scenarios, c.Scenario) {
		bad("unknown scenario %q (want one of %s)", c.Scenario, strings.Join(scenarios, ", "))
	}
	if c.URL == "" {
		bad("--url (or FLASHBENCH_URL) is required")
	}
	if c.JWTSecret == "" {
		bad("--jwt-secret (or JWT_SECRET) is required")
	}
	if c.Stock < 1 || c.Stock > 1_000_000_000 {
		bad("--stock must be between 1 and 1000000000")
	}
	if c.Buyers < 1 {
		bad("--buyers must be at least 1")
	}
	if c.Concurrency < 1 {
		bad("--concurrency must be at least 1")
	}
	if c.Waiters < 1 {
		bad("--waiters must be at least 1")
	}
	if c.Rate < 0 {
		bad("--rate must not be negative")
	}
	if c.Duration < 0 || c.Timeout <= 0 {
		bad("--duration must not be negative and --timeout must be positive")
	}
	if c.Scenario == ScenarioCartMix && (c.SKUs < 1 || c.SKUs > 1000) {
		bad("--skus must be between 1 and 1000")
	}
	if c.Wait != "poll" && c.Wait != "sse" {
		bad("--wait must be poll or sse")
	}
	if _, err := parseServerProcs(c.ServerProcs, c.ServerPIDs); err != nil {
		errs = append(errs, err)
	}
	if c.Hold != 0 && (c.Hold < time.Second || c.Hold > 7*24*time.Hour) {
		bad("--hold must be 0 or between 1s and 168h")
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

const usageText = `flashbench drives a running orderd over HTTP as real clients do, then
checks the guarantees of SPEC 5 in PostgreSQL and the ORDER_EVENTS stream.

Usage:
  flashbench SCENARIO --url URL --jwt-secret SECRET --stock S --buyers N --concurrency C [flags]

Scenarios:
  hot-sku    one SKU with stock S, N buyers of one unit each (direct checkout)
  sold-out   hot-sku with N = 10 x S by default: checks that exactly S are confirmed
  cart-mix   M SKUs of stock S each, carts of 1 to 5 SKUs, orders spanning partitions
  preview    POST /v1/checkout/preview of 3-line carts for --duration
  raw-accept hot-sku's checkouts only: counts 202/s, awaits no decision, verifies nothing
             (against orderd, or against the bare handler of benchlimits http)

  flashbench median [--keys k1,k2] FILE...   medians of the JSON lines of repeated runs

It prints a progress bar on stderr while it runs (when stderr is a terminal
and --json-only is not set), then one JSON line on stdout. It exits 1 when a
check fails (naming it on stderr and under "checks"), 2 on a usage or setup
error.

Environment: FLASHBENCH_URL, JWT_SECRET, DATABASE_URL, NATS_URL stand in for
the flags of the same meaning.

Flags:
`

// parseConfig reads the command line. The scenario is the first argument
// (or the first one after the flags).
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("flashbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.URL, "url", "", "base URL of the service (env FLASHBENCH_URL; default "+defaultURL+", orderd's default address)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 secret the service verifies tokens with (env JWT_SECRET)")
	fs.Int64Var(&c.Stock, "stock", 0, "S: stock of each SKU (default 10000 for hot-sku, 1000 otherwise)")
	fs.IntVar(&c.Buyers, "buyers", 0, "N: distinct buyers, one checkout each (default 50000 hot-sku, 10xS sold-out, 10000 cart-mix, 1000 preview users)")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "C: requests in flight at most (the closed loop's workers)")
	fs.IntVar(&c.Waiters, "waiters", 0, "orders whose final status is awaited at once, one connection each (default max(2C, 1024))")
	fs.Float64Var(&c.Rate, "rate", 0, "checkouts per second, open model (0 = closed loop with C workers)")
	fs.DurationVar(&c.Duration, "duration", 0, "cap on the load phase; the length of preview (default 10s there)")
	fs.Int64Var(&c.Seed, "seed", 1, "seed of carts and buyer order")
	fs.IntVar(&c.SKUs, "skus", 16, "M: SKUs in cart-mix")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL DSN to verify the guarantees in (env DATABASE_URL; empty = skip)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS URL to verify ORDER_EVENTS (env NATS_URL; empty = skip)")
	fs.StringVar(&c.Report, "report", "", "write a self-contained HTML report with charts to this file")
	fs.StringVar(&c.Wait, "wait", "poll", "how buyers wait for the final status: poll (long-poll) or sse")
	fs.DurationVar(&c.Timeout, "timeout", 60*time.Second, "how long after the last checkout to wait for final statuses (later ones are lost)")
	fs.BoolVar(&c.JSONOnly, "json-only", false, "no progress bar, only the JSON line")
	fs.DurationVar(&c.Hold, "hold", time.Hour, "payment hold of the SKUs created, so confirmed orders do not expire during the run (0 = server default)")
	fs.StringVar(&c.ServerProcs, "server-procs", defaultServerProcs, "the server's processes by name (/proc/<pid>/comm), whose CPU per order is measured during the sale; none = not measured")
	fs.StringVar(&c.ServerPIDs, "server-pids", "", "the server's processes by pid, with their descendants, instead of --server-procs (comma-separated)")
	fs.DurationVar(&c.Slack, "late-after", 10*time.Millisecond, "open model: a checkout that starts later than this after it was due counts as late")

	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Scenario, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.Scenario == "" && fs.NArg() > 0 {
		c.Scenario = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return c, err
		}
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if c.Scenario == "" {
		fs.Usage()
		return c, errors.New("no scenario given")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// Environment fallbacks, applied after parsing so that --help never
	// prints a secret as a default.
	for _, e := range []struct {
		flag, env string
		dst       *string
	}{
		{"url", "FLASHBENCH_URL", &c.URL},
		{"jwt-secret", "JWT_SECRET", &c.JWTSecret},
		{"database-url", "DATABASE_URL", &c.DatabaseURL},
		{"nats-url", "NATS_URL", &c.NATSURL},
	} {
		if !set[e.flag] {
			*e.dst = getenv(e.env)
		}
	}
	if c.URL == "" && !set["url"] {
		c.URL = defaultURL
	}
	c.applyDefaults(set)
	return c, c.validate()
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
