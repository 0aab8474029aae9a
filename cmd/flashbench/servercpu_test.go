package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// burnEnv makes the test binary a CPU burner (burnMain) instead of running
// the tests: "BEFORE,AFTER[,CHILD]" in milliseconds of its own CPU time.
const burnEnv = "FLASHBENCH_TEST_BURN"

func TestMain(m *testing.M) {
	if spec := os.Getenv(burnEnv); spec != "" {
		os.Exit(burnMain(spec))
	}
	os.Exit(m.Run())
}

// burnMain is a process that spends a known amount of CPU: with CHILD, it
// first runs a burner of CHILD ms as its child and reaps it; then it burns
// until its own CPU time (all its threads, from getrusage) reaches BEFORE
// ms. With AFTER = 0 it exits there. Otherwise it prints "ready <pid>",
// waits for SIGUSR1 and burns AFTER ms more. Before it exits it prints
// "spent <µs>": its CPU time since the signal, or in all (the test
// binary's start, slower with -race, included) without one.
func burnMain(spec string) int {
	var ms [3]int
	for i, f := range strings.Split(spec, ",") {
		ms[i], _ = strconv.Atoi(f)
	}
	if ms[2] > 0 {
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), fmt.Sprintf("%s=%d,0", burnEnv, ms[2]))
		if err := child.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "burner's child:", err)
			return 1
		}
	}
	burnUntil(time.Duration(ms[0]) * time.Millisecond)
	var since time.Duration
	if ms[1] > 0 {
		resume := make(chan os.Signal, 1)
		signal.Notify(resume, syscall.SIGUSR1)
		fmt.Printf("ready %d\n", os.Getpid())
		<-resume
		since = selfCPU()
		burnUntil(since + time.Duration(ms[1])*time.Millisecond)
	}
	fmt.Printf("spent %d\n", (selfCPU() - since).Microseconds())
	return 0
}

var burnSink int

// burnUntil spins until the process has used total CPU time.
func burnUntil(total time.Duration) {
	for selfCPU() < total {
		x := 0
		for i := range 100_000 {
			x += i * i
		}
		burnSink += x
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// family is a parent shell named fbshell (a link to /bin/sh) that, once
// told to, starts n burners named fbburn (links to this test binary),
// waits for them (reaping them) and says "reaped", then stays until its
// input closes: it plays the postmaster, they the backends.
type family struct {
	shell  *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	burner string
}

func startFamily(t *testing.T, n int, spec string) *family {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f := &family{burner: filepath.Join(dir, "fbburn")}
	shell := filepath.Join(dir, "fbshell")
	if err := os.Symlink(self, f.burner); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/sh", shell); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`read go; i=0; while [ $i -lt %d ]; do "$BURNER" & i=$((i+1)); done; wait; echo reaped; read end`, n)
	f.shell = exec.Command(shell, "-c", script)
	f.shell.Env = append(os.Environ(), "BURNER="+f.burner, burnEnv+"="+spec)
	f.shell.Stderr = os.Stderr
	if f.stdin, err = f.shell.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := f.shell.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f.lines = bufio.NewScanner(out)
	if err := f.shell.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.stdin.Close()
		f.shell.Process.Kill()
		f.shell.Wait()
	})
	return f
}

// tell sends the shell one line.
func (f *family) tell(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(f.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// awaitReady reads the family's output until n burners are ready and
// returns their pids.
func (f *family) awaitReady(t *testing.T, n int) []int {
	t.Helper()
	var pids []int
	for len(pids) < n && f.lines.Scan() {
		if pid, ok := strings.CutPrefix(f.lines.Text(), "ready "); ok {
			p, _ := strconv.Atoi(pid)
			pids = append(pids, p)
		}
	}
	if len(pids) < n {
		t.Fatalf("%d burners ready, want %d: %v", len(pids), n, f.lines.Err())
	}
	return pids
}

// awaitReaped reads the family's output until the shell has reaped its
// burners and returns the CPU time they said they spent in the window.
func (f *family) awaitReaped(t *testing.T) time.Duration {
	t.Helper()
	var spent time.Duration
	for f.lines.Scan() {
		line := f.lines.Text()
		if us, ok := strings.CutPrefix(line, "spent "); ok {
			n, _ := strconv.ParseInt(us, 10, 64)
			spent += time.Duration(n) * time.Microsecond
		}
		if line == "reaped" {
			return spent
		}
	}
	t.Fatalf("the family ended before reaping: %v", f.lines.Err())
	return 0
}

// briefRule is the accounting that counts cutime + cstime for the roots of
// the set only: the one the comment of servercpu.go shows wrong.
func briefRule(c cpuSample) int64 {
	in := map[int]bool{}
	for _, p := range c.procs {
		in[p.pid] = true
	}
	var sum int64
	for _, p := range c.procs {
		sum += p.self
		if !in[p.ppid] {
			sum += p.kids
		}
	}
	return sum
}

func sumTicks(c cpuSample) int64 {
	var sum int64
	for _, t := range c.ticks() {
		sum += t
	}
	return sum
}

// TestServerCPUCountsReapedChildrenOnce runs real processes that spend a
// known amount of CPU (each says how much, from getrusage) and checks the
// accounting of the window between two samples against it, within a loose
// tolerance (ticks are 10 ms, a Go process spends a little exiting, the
// shell a little forking). Nothing is timed: only CPU time is compared.
func TestServerCPUCountsReapedChildrenOnce(t *testing.T) {
	const n, window = 3, 200 // burners; ms of CPU each spends in the window
	byName := procSelector{names: []string{"fbshell", "fbburn"}}
	tests := []struct {
		name string
		spec string // burnMain's
		// startedBefore: the burners start, and wait, before the first
		// sample; otherwise they start after it.
		startedBefore bool
		byPID         bool // select the shell and its descendants by pid
		// briefOff: the roots-only rule is off by the children reaped
		// before the first sample.
		briefOff bool
	}{
		{name: "burners born and reaped between the samples", spec: fmt.Sprint(window, ",0"), byPID: true},
		{name: "burners alive at the first sample, reaped before the second", spec: fmt.Sprint(50, ",", window), startedBefore: true},
		{name: "burners that reaped a child of their own before the first sample", spec: fmt.Sprint(50, ",", window, ",", 200), startedBefore: true, briefOff: true},
	}
	proc, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFamily(t, n, tt.spec)
			sel := byName
			if tt.byPID {
				sel = procSelector{pids: []int{f.shell.Process.Pid}}
			}
			var pids []int
			if tt.startedBefore {
				f.tell(t)
				pids = f.awaitReady(t, n)
			}
			first, err := sel.sample(proc)
			if err != nil {
				t.Fatal(err)
			}
			if tt.startedBefore {
				for _, pid := range pids {
					if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				f.tell(t)
			}
			spent := f.awaitReaped(t)
			second, err := sel.sample(proc)
			if err != nil {
				t.Fatal(err)
			}

			got := float64(sumTicks(second)-sumTicks(first)) * 1000 / clkTck
			want := float64(spent.Milliseconds())
			if want < n*window {
				t.Fatalf("the burners say they spent %.0f ms in the window, want at least %d", want, n*window)
			}
			tolerance := 0.15*want + 100
			t.Logf("%d processes at the first sample, %d at the second; %.0f ms counted, %.0f ms spent", len(first.procs), len(second.procs), got, want)
			if math.Abs(got-want) > tolerance {
				t.Errorf("%.0f ms of CPU counted in the window, want %.0f ± %.0f", got, want, tolerance)
			}
			if len(second.procs) != 1 {
				t.Errorf("%d processes at the second sample, want the shell alone", len(second.procs))
			}
			kind := "fbshell"
			if _, ok := second.ticks()[kind]; !ok {
				t.Errorf("kinds %v, want %s", second.ticks(), kind)
			}

			brief := float64(briefRule(second)-briefRule(first)) * 1000 / clkTck
			t.Logf("the roots-only rule counts %.0f ms", brief)
			if off := math.Abs(brief-want) > tolerance; off != tt.briefOff {
				t.Errorf("the roots-only rule counts %.0f ms for %.0f spent: off %v, want %v", brief, want, off, tt.briefOff)
			}
		})
	}
}

func TestServerCPUResult(t *testing.T) {
	m := &cpuMeter{sel: procSelector{names: []string{"orderd", "postgres", "redis-server", "nats-server"}}}
	at := time.Now()
	m.first = cpuSample{at: at, procs: []procTicks{
		{pid: 10, kind: "orderd", self: 100},
		{pid: 20, kind: "postgres", self: 5, kids: 50},
		{pid: 21, ppid: 20, kind: "postgres", self: 30},
		{pid: 30, kind: "redis", self: 7},
	}}
	m.last = cpuSample{at: at.Add(2500 * time.Millisecond), procs: []procTicks{
		{pid: 10, kind: "orderd", self: 300},           // +200
		{pid: 20, kind: "postgres", self: 6, kids: 90}, // backend 21 (30 then 40) reaped, +1 +40
		{pid: 30, kind: "redis", self: 27},             // +20
	}}
	per, cpu := m.result(1000)
	if per == nil {
		t.Fatalf("not measured: %+v", cpu)
	}
	if *per != 2310 {
		t.Errorf("µs per order %v, want 2310 (2.31 s over 1000 orders)", *per)
	}
	want := map[string]float64{"orderd": 2000, "postgres": 110, "redis": 200}
	for k, v := range want {
		if cpu.PerOrderSplit[k] != v {
			t.Errorf("split %v, want %v", cpu.PerOrderSplit, want)
		}
	}
	if *cpu.Seconds != 2.31 || cpu.SecondsSplit["postgres"] != 0.11 || *cpu.WindowS != 2.5 {
		t.Errorf("seconds %v split %v window %v", *cpu.Seconds, cpu.SecondsSplit, *cpu.WindowS)
	}
	if cpu.Processes["postgres"] != 1 || cpu.Note != "no nats-server process" {
		t.Errorf("processes %v note %q", cpu.Processes, cpu.Note)
	}
	line := describeServerCPU(per, cpu)
	if !strings.Contains(line, "2310 µs per order (orderd 2000, postgres 110, redis 200)") {
		t.Errorf("human line %q", line)
	}
}

func TestServerCPUNotMeasured(t *testing.T) {
	var none *cpuMeter
	if per, cpu := none.result(10); per != nil || cpu.Note != "" {
		t.Errorf("a nil meter: %v %+v", per, cpu)
	}
	// The server on another machine: no process of those names here.
	m := newCPUMeter(procSelector{names: []string{"no-such-proc-x"}})
	m.begin()
	m.end()
	per, cpu := m.result(10)
	if per != nil || cpu.Seconds != nil || !strings.Contains(cpu.Note, "no process named no-such-proc-x on this machine") {
		t.Errorf("nothing to measure: %v %+v", per, cpu)
	}
	s := &Summary{ServerCPUPerOrder: per, ServerCPU: cpu}
	js := string(s.JSON())
	if strings.Contains(js, `"server_cpu_us_per_order"`) || !strings.Contains(js, `"server_cpu_note":"not measured: no process named`) {
		t.Errorf("JSON %s", js)
	}
	m = newCPUMeter(procSelector{pids: []int{os.Getpid()}})
	m.begin()
	m.end()
	if per, cpu := m.result(0); per != nil || cpu.Note != "not measured: no order was decided" {
		t.Errorf("no order: %v %+v", per, cpu)
	}
	if newCPUMeter(procSelector{}) != nil {
		t.Error("--server-procs none still measures")
	}
}

func TestParseServerProcs(t *testing.T) {
	sel, err := parseServerProcs(defaultServerProcs, "")
	if err != nil || len(sel.names) != 4 || sel.off() {
		t.Errorf("%+v %v", sel, err)
	}
	if sel, _ := parseServerProcs("none", ""); !sel.off() {
		t.Errorf("none: %+v", sel)
	}
	if sel, err := parseServerProcs("", " 12, 34"); err != nil || len(sel.pids) != 2 || sel.pids[1] != 34 {
		t.Errorf("pids: %+v %v", sel, err)
	}
	if _, err := parseServerProcs("", "12,x"); err == nil {
		t.Error("a pid that is not a number is accepted")
	}
	if _, err := parseConfig(strings.Fields("hot-sku --jwt-secret s --server-pids 0"), env(nil), io.Discard); err == nil {
		t.Error("--server-pids 0 is accepted")
	}
}
