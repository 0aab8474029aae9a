package main

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a strings.Builder safe for the bar's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressDrawsTheState(t *testing.T) {
	var out syncBuffer
	p := startProgress(&out, 10, "orders", func() (int64, string) { return 4, "accepted 7 decided 4" })
	time.Sleep(300 * time.Millisecond)
	p.finish()
	got := out.String()
	if !strings.Contains(got, "accepted 7 decided 4") || !strings.Contains(got, "4/10") {
		t.Errorf("the bar shows %q", got)
	}
	var none *progress
	none.finish() // no bar: nothing to do
}
