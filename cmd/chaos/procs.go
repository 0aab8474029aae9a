package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process the orchestrator runs (orderd api, an orderd worker,
// nats-server), restarted after each fault that kills it. Every
// incarnation appends to the same log file.
type proc struct {
	name     string
	bin      string
	args     []string
	env      []string
	logPath  string
	readyURL string // polled for a 2xx after start; empty: wait for readyLog
	readyLog string // the JSON log line's msg that says it is ready

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	starts  int
	peakKB  int64 // the highest VmHWM of any incarnation
	stopped bool  // SIGSTOPped
	lastLog int64 // the log's size when this incarnation started
}

// start starts a new incarnation and waits until it is ready.
func (p *proc) start(ctx context.Context, timeout time.Duration) error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	st, _ := f.Stat()
	fmt.Fprintf(f, "### chaos: start %s #%d at %s\n", p.name, p.starts+1, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C of the orchestrator does not reach it
	// before the orchestrator's own cleanup does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.stopped = cmd, done, false
	p.starts++
	if st != nil {
		p.lastLog = st.Size()
	}
	p.mu.Unlock()
	return p.waitReady(ctx, timeout)
}

// waitReady polls readyURL (or the log for readyLog) until the process is
// ready, exits, or timeout passes.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready; log %s:\n%s", p.name, p.logPath, tailFile(p.logPath, 15))
		}
		if p.readyURL != "" {
			if resp, err := hc.Get(p.readyURL); err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					return nil
				}
			}
		} else if p.readyLog != "" && p.logHas(p.readyLog) {
			return nil
		} else if p.readyLog == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s; log %s:\n%s", p.name, timeout, p.logPath, tailFile(p.logPath, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logHas reports whether the current incarnation logged a line containing s.
func (p *proc) logHas(s string) bool {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return false
	}
	p.mu.Lock()
	off := p.lastLog
	p.mu.Unlock()
	if off > int64(len(data)) {
		off = 0
	}
	return bytes.Contains(data[off:], []byte(s))
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// sampleRSS records the incarnation's peak RSS (VmHWM) so far.
func (p *proc) sampleRSS() {
	pid := p.pid()
	if pid == 0 || p.exited() {
		return
	}
	if kb := vmHWM(pid); kb > 0 {
		p.mu.Lock()
		p.peakKB = max(p.peakKB, kb)
		p.mu.Unlock()
	}
}

func (p *proc) peak() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peakKB
}

// signal sends sig to the running incarnation (sampling its RSS first).
func (p *proc) signal(sig syscall.Signal) error {
	p.sampleRSS()
	pid := p.pid()
	if pid == 0 || p.exited() {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("%s %s: %w", sig, p.name, err)
	}
	p.mu.Lock()
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	p.mu.Unlock()
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	return p.wait(10 * time.Second)
}

func (p *proc) wait(d time.Duration) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s (pid %d) still runs %s after the signal", p.name, p.pid(), d)
	}
}

// stop ends the process at the end of the run: SIGCONT if stopped, then
// SIGTERM (a graceful shutdown) and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		p.signal(syscall.SIGCONT)
	}
	p.signal(syscall.SIGTERM)
	if p.wait(grace) != nil {
		p.signal(syscall.SIGKILL)
		p.wait(5 * time.Second)
	}
}

// vmHWM returns the peak resident set size of pid in kB, 0 if unknown.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs a command to completion with a timeout, returning its combined
// output in the error.
func run(ctx context.Context, timeout time.Duration, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// logLines returns the JSON log lines of a file whose msg is msg.
func logLines(path, msg string) []map[string]any {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
