package ingress

import (
	"context"
	"sync"
	"time"

	"github.com/flashsale/orderd/pkg/redisstore"
)

// queueRefresh is how old the partitions' served counters may be when a
// queue position is computed from them.
const queueRefresh = 250 * time.Millisecond

// queueLines tells a pending order's place in its partition's line: its
// ticket (taken when the ingress cached it) minus the tickets the partition
// has served (counted by the worker after each batch; see
// pkg/redisstore/queue.go for how and how approximate). The served counters
// of every partition are read in one Redis round trip at most once per
// queueRefresh and shared by every request of the process, so a position
// costs no round trip of its own: polls and event streams of a hot sale's
// waiting buyers do not multiply the reads.
type queueLines struct {
	status     StatusCache
	partitions int

	mu   sync.Mutex
	done []int64
	at   time.Time
}

func newQueueLines(status StatusCache, partitions int) *queueLines {
	return &queueLines{status: status, partitions: partitions}
}

// ahead returns how many commands are ahead of ticket t, and false when
// that is not known (no ticket, or the counters cannot be read).
func (q *queueLines) ahead(ctx context.Context, t redisstore.Ticket) (int64, bool) {
	if q == nil || t.N == 0 || t.Partition >= q.partitions {
		return 0, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done == nil || time.Since(q.at) > queueRefresh {
		// On a failure, the last counters serve until the next refresh.
		if done, err := q.status.QueueDone(ctx, q.partitions); err == nil {
			q.done = done
		}
		q.at = time.Now()
		if q.done == nil {
			return 0, false
		}
	}
	return max(t.N-q.done[t.Partition]-1, 0), true
}
