package main

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// The server's CPU per order (SPEC 7's server_cpu_us_per_order): the user
// and system CPU time that the server's processes (orderd, PostgreSQL,
// Redis, a separate NATS server) spent between the first checkout sent and
// the last checkout answered, divided by the orders decided. It is read
// from /proc/<pid>/stat on the machine flashbench runs on, so it exists only
// when the server runs there too.
//
// Which processes: every process whose comm (/proc/<pid>/comm, the first 15
// bytes of the executable's name) is one of --server-procs; or, with
// --server-pids, the processes named and all their descendants (make bench
// names its own orderd, nats-server, Redis and postmaster, so that another
// PostgreSQL cluster or Redis on the machine does not count). A process
// counts under its kind: its comm without "-server" (orderd, postgres,
// redis, nats); with --server-pids, the kind of the named ancestor.
//
// How a process's CPU is counted: utime + stime + cutime + cstime (fields
// 14 to 17 of /proc/<pid>/stat), for every process in the set, and the
// figure is the difference of the two sums, never a difference per process.
// Why this loses and double-counts nothing, in particular PostgreSQL's
// short-lived backends:
//
//   - A tick of CPU is in exactly one place at any moment: in the
//     utime/stime of the process that spent it while that process is not
//     yet reaped (alive or a zombie: a zombie's stat still shows its
//     times), and, once its parent wait()s for it, in the parent's
//     cutime/cstime, which the kernel increases by the child's utime +
//     cutime (wait_task_zombie: psig->cutime += tgutime + sig->cutime);
//     when the parent is reaped in turn, they move to the grandparent.
//   - So the sum over a set of unreaped processes of utime + stime +
//     cutime + cstime counts every tick of those processes and of their
//     reaped descendants once, as long as the holder of a tick stays in the
//     set. The set holds a backend and its postmaster, so a tick moving
//     from one to the other stays counted once.
//   - A backend born and reaped between the samples: at the second its
//     whole CPU is in the postmaster's cutime, all of it inside the window.
//   - A backend alive at the first sample that exits and is reaped before
//     the second: the first sum holds its utime then (u1), the second holds
//     its final utime (u2) in the postmaster's cutime, and the difference
//     u2 - u1 is what it spent in the window; dropping the pids that
//     vanished, or taking a difference per pid, would instead count u2
//     again, all of it.
//   - Counting cutime for the roots only (a postmaster) and utime + stime
//     for the processes whose parent is in the set would be wrong for a
//     backend that had reaped children of its own before the first sample
//     (an archive_command, COPY ... PROGRAM): their CPU would be missing
//     from the first sum and appear in the second once the backend is
//     reaped. TestServerCPUCountsReapedChildrenOnce shows it.
//
// Where it can still be off: a process of the set reaped by a parent
// outside it (orderd exiting during the sale) takes its CPU out of the sum;
// a child outside the set (a shell of archive_command) is counted whole
// when a member reaps it, though it may have run before the window; a
// parent that ignores SIGCHLD has its children reaped without their times
// added to its cutime; and each field is truncated to a tick (10 ms) at
// each sample. On a shared machine the PostgreSQL and Redis servers also
// spend CPU for other clients: the figure is the server's, not the run's.

// clkTck is USER_HZ, the unit of the times in /proc/<pid>/stat: 100 on
// every Linux (the kernel converts from its own HZ; `getconf CLK_TCK`
// prints 100), which is also what procfs assumes.
const clkTck = 100

// defaultServerProcs are the processes of the server, by comm.
const defaultServerProcs = "orderd,postgres,redis-server,nats-server"

// kindOf names a comm's kind in the split: redis-server is "redis".
func kindOf(comm string) string { return strings.TrimSuffix(comm, "-server") }

// procSelector chooses the server's processes among those of the machine.
type procSelector struct {
	names []string // comms of --server-procs (with pids, the kinds a note calls absent)
	pids  []int    // --server-pids: these and their descendants, instead of names
}

// parseServerProcs reads --server-procs and --server-pids.
func parseServerProcs(procs, pids string) (procSelector, error) {
	var sel procSelector
	for _, n := range strings.Split(procs, ",") {
		if n = strings.TrimSpace(n); n != "" && n != "none" {
			sel.names = append(sel.names, n)
		}
	}
	for _, p := range strings.Split(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil || pid < 1 {
			return sel, fmt.Errorf("--server-pids: %q is not a process id", p)
		}
		sel.pids = append(sel.pids, pid)
	}
	return sel, nil
}

// off reports whether nothing is to be measured.
func (sel procSelector) off() bool { return len(sel.names) == 0 && len(sel.pids) == 0 }

// procTicks is one process's CPU in clock ticks at one sample.
type procTicks struct {
	pid, ppid  int
	kind       string
	self, kids int64 // utime + stime; cutime + cstime
}

// cpuSample is the server's processes at one moment.
type cpuSample struct {
	at      time.Time
	procs   []procTicks
	missing []int // --server-pids not found
}

// ticks sums utime + stime + cutime + cstime per kind (see above).
func (c cpuSample) ticks() map[string]int64 {
	out := map[string]int64{}
	for _, p := range c.procs {
		out[p.kind] += p.self + p.kids
	}
	return out
}

// sample reads the CPU times of the selected processes under /proc.
func (sel procSelector) sample(proc procfs.FS) (cpuSample, error) {
	all, err := proc.AllProcs()
	if err != nil {
		return cpuSample{}, fmt.Errorf("list processes: %w", err)
	}
	c := cpuSample{at: time.Now()}
	stats := make(map[int]procfs.ProcStat, len(all))
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			continue // it exited since the listing: its CPU is in its parent's cutime
		}
		stats[st.PID] = st
	}
	kinds := sel.kinds(stats, &c)
	for pid, st := range stats {
		if kind, ok := kinds[pid]; ok {
			c.procs = append(c.procs, procTicks{pid: pid, ppid: st.PPID, kind: kind,
				self: int64(st.UTime + st.STime), kids: int64(st.CUTime + st.CSTime)})
		}
	}
	return c, nil
}

// kinds returns the kind of every selected process by pid, and notes the
// named pids that do not exist.
func (sel procSelector) kinds(stats map[int]procfs.ProcStat, c *cpuSample) map[int]string {
	out := map[int]string{}
	if len(sel.pids) == 0 {
		for pid, st := range stats {
			if slices.Contains(sel.names, st.Comm) {
				out[pid] = kindOf(st.Comm)
			}
		}
		return out
	}
	children := map[int][]int{}
	for pid, st := range stats {
		children[st.PPID] = append(children[st.PPID], pid)
	}
	for _, root := range sel.pids {
		st, ok := stats[root]
		if !ok {
			c.missing = append(c.missing, root)
			continue
		}
		kind := kindOf(st.Comm)
		for todo := []int{root}; len(todo) > 0; {
			pid := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if _, seen := out[pid]; !seen {
				out[pid] = kind
				todo = append(todo, children[pid]...)
			}
		}
	}
	return out
}

// ServerCPU is the server's CPU during the sale, in the JSON line next to
// server_cpu_us_per_order. Everything is omitted when it was not measured,
// and Note says why.
type ServerCPU struct {
	PerOrderSplit map[string]float64 `json:"server_cpu_us_per_order_split,omitempty"` // by kind: orderd, postgres, redis, nats
	Seconds       *float64           `json:"server_cpu_s,omitempty"`                  // user + system seconds in the window
	SecondsSplit  map[string]float64 `json:"server_cpu_s_split,omitempty"`
	WindowS       *float64           `json:"server_cpu_window_s,omitempty"`  // first checkout sent to last checkout answered
	Processes     map[string]int     `json:"server_cpu_processes,omitempty"` // processes of each kind at the second sample
	Note          string             `json:"server_cpu_note,omitempty"`      // why it is missing, or what is missing from it
}

// cpuMeter samples the server's processes at the start and the end of the
// sale. A nil meter measures nothing.
type cpuMeter struct {
	sel         procSelector
	proc        procfs.FS
	first, last cpuSample
	err         error
}

// newCPUMeter returns the meter of the selection, or nil when there is
// nothing to select.
func newCPUMeter(sel procSelector) *cpuMeter {
	if sel.off() {
		return nil
	}
	m := &cpuMeter{sel: sel}
	m.proc, m.err = procfs.NewFS(procfs.DefaultMountPoint)
	return m
}

// begin takes the first sample: call it just before the first checkout.
func (m *cpuMeter) begin() {
	if m == nil || m.err != nil {
		return
	}
	m.first, m.err = m.sel.sample(m.proc)
}

// end takes the second sample: call it when the last checkout is answered.
func (m *cpuMeter) end() {
	if m == nil || m.err != nil || m.first.at.IsZero() {
		return
	}
	m.last, m.err = m.sel.sample(m.proc)
}

// result divides the CPU of the window by the orders decided. It returns
// nil for a nil meter; otherwise a note when something is missing.
func (m *cpuMeter) result(decided int) (perOrder *float64, cpu ServerCPU) {
	if m == nil {
		return nil, cpu
	}
	switch {
	case m.err != nil:
		cpu.Note = fmt.Sprintf("not measured: %v", m.err)
		if errors.Is(m.err, fs.ErrNotExist) {
			cpu.Note = "not measured: no /proc on this machine"
		}
		return nil, cpu
	case m.last.at.IsZero():
		cpu.Note = "not measured: the sale did not run"
		return nil, cpu
	case len(m.last.procs) == 0:
		cpu.Note = "not measured: " + m.sel.describe() + " on this machine (the server runs elsewhere?)"
		return nil, cpu
	case decided == 0:
		cpu.Note = "not measured: no order was decided"
		return nil, cpu
	}
	t0, t1 := m.first.ticks(), m.last.ticks()
	cpu.PerOrderSplit, cpu.SecondsSplit, cpu.Processes = map[string]float64{}, map[string]float64{}, map[string]int{}
	var total int64
	for kind, t := range t1 {
		d := t - t0[kind]
		total += d
		cpu.SecondsSplit[kind] = round2(float64(d) / clkTck)
		cpu.PerOrderSplit[kind] = round2(float64(d) / clkTck * 1e6 / float64(decided))
	}
	for _, p := range m.last.procs {
		cpu.Processes[p.kind]++
	}
	secs, window := round2(float64(total)/clkTck), round2(m.last.at.Sub(m.first.at).Seconds())
	us := round2(float64(total) / clkTck * 1e6 / float64(decided))
	cpu.Seconds, cpu.WindowS = &secs, &window
	cpu.Note = m.gaps(t0, t1)
	return &us, cpu
}

// describe names what was looked for, for a note.
func (sel procSelector) describe() string {
	if len(sel.pids) > 0 {
		return fmt.Sprintf("none of the processes %v", sel.pids)
	}
	return "no process named " + strings.Join(sel.names, ", ")
}

// gaps notes what the figure may lack: kinds of --server-procs with no
// process measured (NATS embedded in orderd counts as orderd), kinds whose
// processes vanished, named pids not found.
func (m *cpuMeter) gaps(t0, t1 map[string]int64) string {
	var notes, absent []string
	for _, n := range m.sel.names {
		if _, ok := t1[kindOf(n)]; !ok {
			absent = append(absent, n)
		}
	}
	if len(absent) > 0 {
		notes = append(notes, "no "+strings.Join(absent, ", ")+" process")
	}
	for _, kind := range slices.Sorted(maps.Keys(t0)) {
		if _, ok := t1[kind]; !ok {
			notes = append(notes, "every "+kind+" process exited during the sale: its CPU is missing")
		}
	}
	if missing := append(slices.Clone(m.first.missing), m.last.missing...); len(missing) > 0 {
		slices.Sort(missing)
		notes = append(notes, fmt.Sprintf("processes %v not found", slices.Compact(missing)))
	}
	return strings.Join(notes, "; ")
}

// describeServerCPU is the human line of the figure.
func describeServerCPU(perOrder *float64, cpu ServerCPU) string {
	if perOrder == nil {
		return "server CPU " + cpu.Note
	}
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(cpu.PerOrderSplit)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", kind, cpu.PerOrderSplit[kind]))
	}
	line := fmt.Sprintf("server CPU %.0f µs per order (%s), %.2f s in %.2f s", *perOrder, strings.Join(parts, ", "), *cpu.Seconds, *cpu.WindowS)
	if cpu.Note != "" {
		line += "; " + cpu.Note
	}
	return line
}

// cpuRow is one line of the report's table of server CPU.
type cpuRow struct {
	Kind, PerOrder, Seconds, Procs string
}

// cpuRows are the report's table: one row per kind, then the total.
func cpuRows(s *Summary) []cpuRow {
	cpu := s.ServerCPU
	if s.ServerCPUPerOrder == nil {
		return nil
	}
	var rows []cpuRow
	total := 0
	for _, kind := range slices.Sorted(maps.Keys(cpu.PerOrderSplit)) {
		total += cpu.Processes[kind]
		rows = append(rows, cpuRow{Kind: kind, PerOrder: fmt.Sprint(cpu.PerOrderSplit[kind]),
			Seconds: fmt.Sprint(cpu.SecondsSplit[kind]), Procs: fmt.Sprint(cpu.Processes[kind])})
	}
	return append(rows, cpuRow{Kind: "total", PerOrder: fmt.Sprint(*s.ServerCPUPerOrder),
		Seconds: fmt.Sprint(*cpu.Seconds), Procs: fmt.Sprint(total)})
}
