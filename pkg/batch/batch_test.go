package batch_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/batch"
)

// TestGroups: calls made while a flush runs are answered by the next flush,
// together, each with its own response.
func TestGroups(t *testing.T) {
	release := make(chan struct{})
	var flushes atomic.Int64
	var sizes []int
	var mu sync.Mutex
	b := batch.New(func(ctx context.Context, reqs []int) ([]int, error) {
		if flushes.Add(1) == 1 {
			<-release // hold the first flush so that the others queue
		}
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		out := make([]int, len(reqs))
		for i, r := range reqs {
			out[i] = r * 10
		}
		return out, nil
	}, batch.Config{Parallel: 1, Max: 100})

	var wg sync.WaitGroup
	results := make([]int, 51)
	do := func(i int) {
		defer wg.Done()
		got, err := b.Do(context.Background(), i)
		if err != nil {
			t.Error(err)
		}
		results[i] = got
	}
	wg.Add(1)
	go do(0)
	for flushes.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	wg.Add(50)
	for i := 1; i <= 50; i++ {
		go do(i)
	}
	// Wait until all 50 are queued behind the held flush, then let it go.
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	for i, got := range results {
		if got != i*10 {
			t.Errorf("call %d got %d, want %d", i, got, i*10)
		}
	}
	if n := flushes.Load(); n >= 51 {
		t.Errorf("%d flushes for 51 calls: nothing was grouped", n)
	}
	t.Logf("flush sizes %v", sizes)
}

// TestErrorFailsTheBatch: a flush's error reaches every call of its batch.
func TestErrorFailsTheBatch(t *testing.T) {
	boom := errors.New("boom")
	b := batch.New(func(ctx context.Context, reqs []string) ([]string, error) { return nil, boom }, batch.Config{})
	if _, err := b.Do(context.Background(), "x"); !errors.Is(err, boom) {
		t.Errorf("err %v, want boom", err)
	}
}

// TestShortAnswerAndPanic: a flush that answers too few responses, or
// panics, fails its calls instead of hanging them.
func TestShortAnswerAndPanic(t *testing.T) {
	short := batch.New(func(ctx context.Context, reqs []int) ([]int, error) { return nil, nil }, batch.Config{})
	if _, err := short.Do(context.Background(), 1); err == nil {
		t.Error("short answer: no error")
	}
	panicky := batch.New(func(ctx context.Context, reqs []int) ([]int, error) { panic("bug") }, batch.Config{})
	if _, err := panicky.Do(context.Background(), 1); err == nil {
		t.Error("panic: no error")
	}
	// The batcher still works after both.
	ok := batch.New(func(ctx context.Context, reqs []int) ([]int, error) { return reqs, nil }, batch.Config{})
	if got, err := ok.Do(context.Background(), 7); err != nil || got != 7 {
		t.Errorf("got %d, %v", got, err)
	}
}

// TestCallerContext: a caller whose context ends stops waiting at once.
func TestCallerContext(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	b := batch.New(func(ctx context.Context, reqs []int) ([]int, error) { <-hold; return reqs, nil }, batch.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want the deadline", err)
	}
}

func BenchmarkDo(b *testing.B) {
	bt := batch.New(func(ctx context.Context, reqs []int) ([]int, error) { return reqs, nil }, batch.Config{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bt.Do(context.Background(), 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
