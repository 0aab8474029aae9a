package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows a run's progress on a terminal: a bar of the buyers done
// (decided or failed) with live counts, redrawn a few times per second from
// the runner's counters so that the hot path only touches atomics.
type progress struct {
	stop chan struct{}
	done chan struct{}
}

// startProgress draws a bar of max steps (units of unit) on w until finish
// is called; state returns the steps done and the description to show.
// With max < 0 the bar is a spinner with a count.
func startProgress(w io.Writer, max int64, unit string, state func() (int64, string)) *progress {
	bar := progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionUseANSICodes(true),
	)
	p := &progress{stop: make(chan struct{}), done: make(chan struct{})}
	update := func() {
		n, desc := state()
		bar.Describe(desc)
		bar.Set64(n)
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				update()
				bar.Exit()
				fmt.Fprintln(w)
				return
			case <-t.C:
				update()
			}
		}
	}()
	return p
}

// finish draws the last state and leaves the bar on the terminal.
func (p *progress) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	<-p.done
}
