package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// durabilitySetting is one JetStream durability configuration measured by
// `benchlimits durability`.
type durabilitySetting struct {
	Name       string
	Replicas   int
	SyncAlways bool
}

var durabilitySettings = []durabilitySetting{
	{"r1-always", 1, true},
	{"r1-lazy", 1, false},
	{"r3-always", 3, true},
	{"r3-lazy", 3, false},
}

func (s durabilitySetting) sync() string {
	if s.SyncAlways {
		return "always"
	}
	return "2m (default)"
}

// durabilityResult is one cell of the table: a setting and a batch size,
// every run's rate and their median.
type durabilityResult struct {
	Setting  string    `json:"setting"`
	Replicas int       `json:"replicas"`
	Sync     string    `json:"sync_interval"`
	Batch    int       `json:"max_batch"`
	Commands int       `json:"commands_per_run"`
	Runs     []float64 `json:"commands_per_s_runs"`
	Median   float64   `json:"commands_per_s_median"`
	P50ms    float64   `json:"publish_p50_ms_median"`
	P99ms    float64   `json:"publish_p99_ms_median"`
}

const durabilityUsage = `Usage:
  benchlimits durability [--settings r1-always,r1-lazy,r3-always,r3-lazy]
      [--batch 1,256] [--n1 3000] [--n256 20000] [--callers 256] [--runs 3]
      [--dir DIR] [--json FILE]

durability: JetStream durable command writes as the ingress issues them
(natsbus.BatchPublisher, concurrent callers, each waiting for the PubAck of
the message carrying its command) on ORDER_CMDS, for each durability
setting: one server or a three-node cluster (R3, every node in this
process, on loopback), sync_interval always or the server's default (lazy,
two minutes). Each run starts fresh servers on empty stores. Prints the
median commands/s of the runs and the median publish latencies.
`

func runDurability(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchlimits durability", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, durabilityUsage) }
	settings := fs.String("settings", "r1-always,r1-lazy,r3-always,r3-lazy", "settings to measure")
	batches := fs.String("batch", "1,256", "most commands per JetStream message (1: no group commit; 256: the ingress's default)")
	n1 := fs.Int("n1", 3000, "commands per run with batch 1")
	nBig := fs.Int("n256", 20000, "commands per run with a batch above 1")
	callers := fs.Int("callers", 256, "concurrent publishers (checkouts in flight)")
	runs := fs.Int("runs", 3, "runs per cell; the median is reported")
	dir := fs.String("dir", "", "where the stores go (default: a temporary directory, removed)")
	jsonOut := fs.String("json", "", "also write the results as JSON lines to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var chosen []durabilitySetting
	for _, name := range strings.Split(*settings, ",") {
		i := slices.IndexFunc(durabilitySettings, func(s durabilitySetting) bool { return s.Name == strings.TrimSpace(name) })
		if i < 0 {
			fmt.Fprintf(stderr, "benchlimits durability: unknown setting %q\n", name)
			return 2
		}
		chosen = append(chosen, durabilitySettings[i])
	}
	var sizes []int
	for _, s := range strings.Split(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "benchlimits durability: bad --batch %q\n", s)
			return 2
		}
		sizes = append(sizes, n)
	}
	if *runs < 1 || *callers < 1 || *n1 < 1 || *nBig < 1 {
		fmt.Fprintln(stderr, "benchlimits durability: --runs, --callers, --n1 and --n256 must be positive")
		return 2
	}
	base := *dir
	if base == "" {
		d, err := os.MkdirTemp("", "benchlimits-durability-")
		if err != nil {
			fmt.Fprintf(stderr, "benchlimits durability: %v\n", err)
			return 1
		}
		defer os.RemoveAll(d)
		base = d
	}
	var results []durabilityResult
	for _, set := range chosen {
		for _, batch := range sizes {
			n := *nBig
			if batch == 1 {
				n = *n1
			}
			res := durabilityResult{Setting: set.Name, Replicas: set.Replicas, Sync: set.sync(), Batch: batch, Commands: n}
			var p50s, p99s []float64
			for run := range *runs {
				if ctx.Err() != nil {
					return 1
				}
				store, err := os.MkdirTemp(base, set.Name+"-")
				if err != nil {
					fmt.Fprintf(stderr, "benchlimits durability: %v\n", err)
					return 1
				}
				rate, p50, p99, err := durabilityRun(ctx, set, batch, n, *callers, store)
				os.RemoveAll(store)
				if err != nil {
					fmt.Fprintf(stderr, "benchlimits durability: %s batch=%d run %d: %v\n", set.Name, batch, run+1, err)
					return 1
				}
				fmt.Fprintf(stderr, "benchlimits durability: %s batch=%d run %d: %.0f commands/s (publish p50 %.1f ms, p99 %.1f ms)\n",
					set.Name, batch, run+1, rate, p50, p99)
				res.Runs = append(res.Runs, rate)
				p50s, p99s = append(p50s, p50), append(p99s, p99)
			}
			res.Median, res.P50ms, res.P99ms = median(res.Runs), median(p50s), median(p99s)
			results = append(results, res)
		}
	}
	fmt.Fprintf(stdout, "| setting | replicas | sync_interval | commands per message | commands/s (median of %d) | runs | publish p50 / p99 ms |\n", *runs)
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|---|")
	for _, r := range results {
		runs := make([]string, len(r.Runs))
		for i, v := range r.Runs {
			runs[i] = strconv.FormatFloat(v, 'f', 0, 64)
		}
		batch := "1"
		if r.Batch > 1 {
			batch = "up to " + strconv.Itoa(r.Batch)
		}
		fmt.Fprintf(stdout, "| %s | R%d | %s | %s | %.0f | %s | %.1f / %.1f |\n",
			r.Setting, r.Replicas, r.Sync, batch, r.Median, strings.Join(runs, ", "), r.P50ms, r.P99ms)
	}
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			fmt.Fprintf(stderr, "benchlimits durability: %v\n", err)
			return 1
		}
		enc := json.NewEncoder(f)
		for _, r := range results {
			enc.Encode(r)
		}
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "benchlimits durability: %v\n", err)
			return 1
		}
	}
	return 0
}

// durabilityRun starts the servers of set on dir, publishes n commands
// from callers goroutines through a BatchPublisher of at most batch
// commands per message, and returns commands/s and the median and 99th
// percentile of one Publish call, in milliseconds.
func durabilityRun(ctx context.Context, set durabilitySetting, batch, n, callers int, dir string) (rate, p50, p99 float64, err error) {
	var servers []*server.Server
	var url string
	if set.Replicas == 1 {
		s, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{Addr: "127.0.0.1:0", StoreDir: dir, SyncAlways: set.SyncAlways})
		if err != nil {
			return 0, 0, 0, err
		}
		servers, url = []*server.Server{s}, s.ClientURL()
	} else {
		var nodes []natsbus.ClusterNode
		servers, nodes, err = natsbus.StartCluster(set.Replicas, dir, set.SyncAlways)
		if err != nil {
			return 0, 0, 0, err
		}
		url = natsbus.ClusterURLs(nodes)
	}
	defer natsbus.ShutdownAll(servers)
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, 0, err
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = natsbus.EnsureStreamsRetry(sctx, js, natsbus.StreamConfig{Replicas: set.Replicas})
	cancel()
	if err != nil {
		return 0, 0, 0, err
	}
	pub := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 1, MaxBatch: batch, InFlight: 2, Timeout: 30 * time.Second})
	defer pub.Close()
	cmd := func() order.Command {
		return order.Command{ID: uuid.New(), Kind: order.KindRestock, Partition: 0, At: time.Now(),
			Restock: &order.Restock{SKUID: uuid.New(), Quantity: 1}}
	}
	// Warm up: the stream's first messages, the connection's buffers.
	for range 20 {
		if err := pub.Publish(ctx, cmd()); err != nil {
			return 0, 0, 0, fmt.Errorf("warm-up publish: %w", err)
		}
	}
	cmds := make(chan order.Command, callers)
	lat := make([][]time.Duration, callers)
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for c := range cmds {
				t0 := time.Now()
				if err := pub.Publish(ctx, c); err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	start := time.Now()
	for range n {
		cmds <- cmd()
	}
	close(cmds)
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return 0, 0, 0, fmt.Errorf("publish: %w", err)
	default:
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	ms := func(q float64) float64 {
		return float64(all[min(len(all)-1, int(q*float64(len(all))))]) / float64(time.Millisecond)
	}
	return float64(n) / elapsed.Seconds(), ms(0.50), ms(0.99), nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
