//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// TestClusterNodeKilledMidSale runs orderd on a three-node NATS cluster
// (three nats-server processes built from the module, on loopback ports,
// sync_interval: always) with every stream replicated three times
// (STREAM_REPLICAS=3). Buyers check out a hot SKU at a steady rate; a third
// of the way in, the leader of ORDER_CMDS is killed with SIGKILL. A buyer
// whose checkout is not answered 202 (503 while the stream elects a new
// leader, 409 while the same key is in flight) retries with the same
// Idempotency-Key, as SPEC 3.2 tells clients to. Once the sale has gone on
// without the node, the node is started again on its store and the sale
// goes on. At the end: every buyer got a 202, every 202 reached a final
// status, exactly the stock was confirmed and nothing oversold, PostgreSQL
// agrees with what the buyers saw, ORDER_EVENTS holds one decision per
// order, and the restarted node is a current replica of every stream and
// consumer, its copy of ORDER_EVENTS equal to the leader's.
func TestClusterNodeKilledMidSale(t *testing.T) {
	t.Parallel()
	const (
		stock    = 300
		rate     = 40  // checkouts started per second
		before   = 120 // checkouts started before the kill
		during   = 200 // at least this many started while the node is down...
		afterAck = 80  // ...and at least this many 202s since the kill
		maxDown  = 450 // at most this many started while it is down
		after    = 160 // checkouts started after the restart
		maxBuyer = before + maxDown + after
		retryFor = 60 * time.Second // how long a buyer keeps retrying
	)
	t0 := time.Now()
	since := func() time.Duration { return time.Since(t0).Round(time.Millisecond) }
	bin := orderdBinary(t)
	natsBin := natsServerBinary(t)
	t.Logf("orderd and nats-server built after %s", since())

	dir := t.TempDir()
	nodes, err := natsbus.NewClusterNodes(3, dir)
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{t: t, bin: natsBin, dir: dir, nodes: nodes, procs: make([]*proc, len(nodes))}
	for i := range nodes {
		cl.start(i)
	}
	urls := natsbus.ClusterURLs(nodes)
	nc, err := natsbus.Connect(urls, "e2e-cluster-checks", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A cluster that just formed may refuse a replicated stream for a
	// moment; orderd's own EnsureStreams (one attempt) then finds them.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	err = natsbus.EnsureStreamsRetry(ctx, js, natsbus.StreamConfig{Replicas: 3})
	cancel()
	if err != nil {
		t.Fatalf("R3 streams on the new cluster: %v", err)
	}
	t.Logf("cluster of 3 formed, R3 streams created after %s", since())

	dsn, db := pgtest.New(t)
	checkDecidedOnceAtEnd(t, db)
	rs, prefix := redistest.New(t)
	unlinkOnCleanup(t, rs, prefix)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=" + dsn,
		"DB_MAX_CONNS=8",
		"REDIS_URL=" + redistest.URL(),
		"REDIS_PREFIX=" + prefix,
		"NATS_URL=" + urls,
		"STREAM_REPLICAS=3",
		"JWT_SECRET=" + testSecret,
		"PARTITIONS=4",
		"NO_MIGRATE=true",
		"LOG_LEVEL=info",
		"SHUTDOWN_TIMEOUT=5s",
		"HTTP_ADDR=127.0.0.1:0",
		"PUBLISH_TIMEOUT=3s",
		"PIN_TTL=2s",
		"ACK_WAIT=5s",
	}
	od := startProc(t, bin, "orderd", env, "serve")
	addr, _ := od.waitLog(t, "http listening", 60*time.Second)["addr"].(string)
	od.waitLog(t, "orderd ready", 60*time.Second)
	api := newAPI(t, "http://"+addr)
	for _, name := range []string{natsbus.CommandStream, natsbus.EventStream} {
		if info := cl.streamInfo(js, name); info.Config.Replicas != 3 {
			t.Fatalf("stream %s has %d replicas, want 3 (STREAM_REPLICAS=3)", name, info.Config.Replicas)
		}
	}

	sku := api.createSKU(t, "cluster console", stock)
	bs := api.newBuyers(t, maxBuyer)
	t.Logf("orderd ready, SKU and %d buyers created after %s", maxBuyer, since())

	// The sale: one checkout started every 1/rate seconds, each retried with
	// its key until it is answered 202.
	var (
		accs     = make([]accepted, maxBuyer)
		errs     = make([]error, maxBuyer)
		attempts = make([]int, maxBuyer)
		mu       sync.Mutex
		answers  = map[string]int{} // non-202 answers, by status
		// when each 202 arrived
		acceptedAt []time.Time
		killedAt   atomic.Int64 // unix nanos; 0 until the kill
		ackSince   atomic.Int64 // 202s received after the kill
		wg         sync.WaitGroup
	)
	checkout := func(i int) {
		defer wg.Done()
		b := bs[i]
		deadline := time.Now().Add(retryFor)
		for {
			attempts[i]++
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			acc, resp, err := api.checkout(ctx, b, directBody(b, sku.ID, 1), "cluster-"+b.ID)
			cancel()
			if err == nil {
				accs[i] = acc
				mu.Lock()
				acceptedAt = append(acceptedAt, time.Now())
				mu.Unlock()
				if k := killedAt.Load(); k != 0 && time.Now().UnixNano() > k {
					ackSince.Add(1)
				}
				return
			}
			what := "transport error"
			if resp != nil {
				what = http.StatusText(resp.Status)
				if resp.Status != http.StatusServiceUnavailable && resp.Status != http.StatusConflict &&
					resp.Status != http.StatusTooManyRequests && resp.Status < 500 {
					errs[i] = err // a refusal a retry will not change
					return
				}
			}
			mu.Lock()
			answers[what]++
			mu.Unlock()
			if time.Now().After(deadline) {
				errs[i] = fmt.Errorf("no 202 within %s (%d attempts), last: %w", retryFor, attempts[i], err)
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	started := 0
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	// startN starts at least least checkouts, more while until says not
	// yet, at most most.
	startN := func(least, most int, until func() bool) {
		for k := 0; k < most && (k < least || (until != nil && !until())); k++ {
			<-tick.C
			wg.Add(1)
			go checkout(started)
			started++
		}
	}
	saleStart := time.Now()
	startN(before, before, nil)

	// Kill the leader of ORDER_CMDS: the stream every 202 depends on.
	leader := cl.streamInfo(js, natsbus.CommandStream).Cluster.Leader
	victim := slices.IndexFunc(nodes, func(n natsbus.ClusterNode) bool { return n.Name == leader })
	if victim < 0 {
		t.Fatalf("ORDER_CMDS leader %q is none of the nodes", leader)
	}
	killedAt.Store(time.Now().UnixNano())
	cl.kill(victim)
	t.Logf("%d checkouts started; SIGKILLed %s, the leader of %s, %s into the sale", started, leader, natsbus.CommandStream, time.Since(saleStart).Round(time.Millisecond))

	// The sale goes on without it.
	downFrom := started
	startN(during, maxDown, func() bool { return ackSince.Load() >= afterAck })
	down := started - downFrom
	// On a starved machine the election may outlast maxDown checkouts: wait
	// for the accepts (retries) rather than start more.
	if err := eventually(30*time.Second, func() error {
		if n := ackSince.Load(); n < afterAck {
			return fmt.Errorf("while %s was down, %d checkouts were started but only %d answered 202", leader, down, n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	info := cl.streamInfo(js, natsbus.CommandStream)
	t.Logf("%d checkouts started and %d answered 202 while %s was down (%s); %s leader now %s",
		down, ackSince.Load(), leader, time.Since(time.Unix(0, killedAt.Load())).Round(time.Millisecond), natsbus.CommandStream, info.Cluster.Leader)

	// It comes back on its store, and the sale goes on.
	cl.start(victim)
	restartedAt := time.Now()
	startN(after, after, nil)
	wg.Wait()
	n := started
	t.Logf("%d checkouts in %s; answers other than 202 (then retried): %v; %d buyers retried",
		n, time.Since(saleStart).Round(time.Millisecond), answers, countIf(attempts[:n], func(a int) bool { return a > 1 }))
	slices.SortFunc(acceptedAt, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for k := 1; k < len(acceptedAt); k++ {
		gap = max(gap, acceptedAt[k].Sub(acceptedAt[k-1]))
	}
	t.Logf("longest time without a 202: %s", gap.Round(time.Millisecond))
	failed := 0
	for i, err := range errs[:n] {
		if err != nil {
			if failed++; failed <= 5 {
				t.Errorf("buyer %d: %v", i, err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d checkouts were never accepted", failed, n)
	}

	decided := awaitDecided(t, api, bs[:n], accs[:n], attempts[:n], 60*time.Second)
	t.Logf("%d orders decided %s after the first checkout", n, time.Since(saleStart).Round(time.Millisecond))
	checkHotSKUDecisions(t, decided, sku, stock)
	if got := api.sku(t, sku.ID); got.Stock != 0 || got.UnitsSold != stock {
		t.Errorf("SKU after the sale: stock %d, units_sold %d; want 0 and %d", got.Stock, got.UnitsSold, stock)
	}
	checkDatabase(t, db, decided, sku.ID, stock)
	want := statuses(decided)
	checkOneDecisionEach(t, awaitDecisionEvents(t, js, want, 30*time.Second), want)

	// The restarted node caught up: a current replica of both streams and
	// of every partition consumer, holding what the leader holds.
	err = eventually(30*time.Second, func() error { return cl.caughtUp(js, victim) })
	if err != nil {
		t.Error(err)
	} else {
		t.Logf("%s caught up %s after its restart", nodes[victim].Name, time.Since(restartedAt).Round(time.Millisecond))
	}
	if od.exited() {
		t.Errorf("orderd exited: %v", od.err)
	}
	t.Logf("total %s", since())
}

func countIf(v []int, f func(int) bool) int {
	n := 0
	for _, x := range v {
		if f(x) {
			n++
		}
	}
	return n
}

// cluster is the test's three nats-server processes.
type cluster struct {
	t     *testing.T
	bin   string
	dir   string
	nodes []natsbus.ClusterNode
	procs []*proc
	runs  []int // starts per node, for log names
}

// start starts node i (again) on its store directory.
func (c *cluster) start(i int) {
	t := c.t
	t.Helper()
	if c.runs == nil {
		c.runs = make([]int, len(c.nodes))
	}
	c.runs[i]++
	node := c.nodes[i]
	conf := filepath.Join(c.dir, node.Name+".conf")
	if err := os.WriteFile(conf, []byte(natsbus.ClusterNodeConfig("orderd-e2e", node, c.nodes, true)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.procs[i] = startNATS(t, c.bin, fmt.Sprintf("%s-run%d", node.Name, c.runs[i]), conf)
	if err := eventually(30*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", node.HTTPPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}); err != nil || c.procs[i].exited() {
		t.Fatalf("%s did not start: %v\n%s", node.Name, err, tail(c.procs[i].log(), 40))
	}
}

// kill SIGKILLs node i and waits until it is gone.
func (c *cluster) kill(i int) {
	p := c.procs[i]
	p.kill(c.t)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s still runs 10s after SIGKILL", p.name)
	}
}

// streamInfo returns a stream's info, retrying while the cluster answers
// nothing (an election).
func (c *cluster) streamInfo(js jetstream.JetStream, name string) *jetstream.StreamInfo {
	c.t.Helper()
	var info *jetstream.StreamInfo
	err := eventually(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		if err == nil && (info.Cluster == nil || info.Cluster.Leader == "") {
			err = fmt.Errorf("stream %s has no leader", name)
		}
		return err
	})
	if err != nil {
		c.t.Fatalf("stream info %s: %v", name, err)
	}
	return info
}

// caughtUp reports why node i is not yet a current replica of the streams
// and the partition consumers, or its copy of ORDER_EVENTS differs from the
// leader's; nil once it is and does not.
func (c *cluster) caughtUp(js jetstream.JetStream, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name := c.nodes[i].Name
	current := func(what string, ci *jetstream.ClusterInfo) error {
		if ci == nil || ci.Leader == "" {
			return fmt.Errorf("%s has no leader", what)
		}
		if ci.Leader == name {
			return nil
		}
		for _, r := range ci.Replicas {
			if r.Name == name {
				if !r.Current || r.Offline || r.Lag != 0 {
					return fmt.Errorf("%s: replica %s current %t, offline %t, lag %d", what, name, r.Current, r.Offline, r.Lag)
				}
				return nil
			}
		}
		return fmt.Errorf("%s: %s is not among its replicas", what, name)
	}
	leaderState := map[string]jetstream.StreamState{}
	for _, sn := range []string{natsbus.CommandStream, natsbus.EventStream} {
		s, err := js.Stream(ctx, sn)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if err := current("stream "+sn, info.Cluster); err != nil {
			return err
		}
		leaderState[sn] = info.State
		if sn != natsbus.CommandStream {
			continue
		}
		for p := range 4 {
			cons, err := s.Consumer(ctx, natsbus.PartitionConsumerName(p))
			if err != nil {
				return err
			}
			ci, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if err := current("consumer "+ci.Name, ci.Cluster); err != nil {
				return err
			}
		}
	}
	// The node's own copy, from its monitoring endpoint.
	local, err := c.localStreams(i)
	if err != nil {
		return err
	}
	for sn, want := range leaderState {
		got, ok := local[sn]
		if !ok {
			return fmt.Errorf("%s holds no copy of %s", name, sn)
		}
		if got.Msgs != want.Msgs || got.LastSeq != want.LastSeq || got.FirstSeq != want.FirstSeq {
			return fmt.Errorf("%s's copy of %s: %d messages, seq %d..%d; the leader's: %d messages, seq %d..%d",
				name, sn, got.Msgs, got.FirstSeq, got.LastSeq, want.Msgs, want.FirstSeq, want.LastSeq)
		}
	}
	return nil
}

// localStreams returns the state of the streams node i stores, as its
// /jsz monitoring endpoint reports them.
func (c *cluster) localStreams(i int) (map[string]jetstream.StreamState, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true", c.nodes[i].HTTPPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string `json:"name"`
				State struct {
					Msgs     uint64 `json:"messages"`
					FirstSeq uint64 `json:"first_seq"`
					LastSeq  uint64 `json:"last_seq"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return nil, fmt.Errorf("jsz of %s: %w", c.nodes[i].Name, err)
	}
	out := map[string]jetstream.StreamState{}
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			out[s.Name] = jetstream.StreamState{Msgs: s.State.Msgs, FirstSeq: s.State.FirstSeq, LastSeq: s.State.LastSeq}
		}
	}
	return out, nil
}

// startNATS starts the nats-server binary on a configuration file, killed
// when the test ends and, should the test binary die first, by the kernel
// (Pdeathsig).
func startNATS(t *testing.T, bin, name, conf string) *proc {
	t.Helper()
	return startProcWith(t, bin, name, []string{"PATH=" + os.Getenv("PATH")},
		func(c *exec.Cmd) { c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }, "-c", conf)
}

// The nats-server binary, built once per test run from the module's
// nats-server version (go.mod) into binDir, which TestMain removes.
var (
	natsOnce     sync.Once
	natsPath     string
	natsBuildErr error
)

func natsServerBinary(t *testing.T) string {
	t.Helper()
	orderdBinary(t) // creates binDir
	natsOnce.Do(func() {
		natsPath = filepath.Join(binDir, "nats-server")
		goBin := "go"
		if root := os.Getenv("GOROOT"); root != "" {
			if p := filepath.Join(root, "bin", "go"); fileExists(p) {
				goBin = p
			}
		}
		out, err := exec.Command(goBin, "build", "-o", natsPath, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsBuildErr = &buildError{err: err, out: string(out)}
		}
	})
	if natsBuildErr != nil {
		t.Fatalf("build nats-server: %v", natsBuildErr)
	}
	return natsPath
}
