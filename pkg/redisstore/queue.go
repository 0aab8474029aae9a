package redisstore

import (
	"context"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// A partition's line: how a waiting buyer learns how many commands are
// ahead of its order. Every pending order that PutPending caches takes a
// ticket, the next value of its home partition's counter queue:<p>:in
// (INCR, in the same script that caches it); the partition's worker adds
// the checkouts it has applied to queue:<p>:done after each batch
// (PartitionDone), and DropPending counts an order whose publish failed as
// done. The commands ahead of a ticket are then about ticket - done - 1.
//
// It is approximate, and says so: tickets are taken in the order the
// ingress processes cached their orders, which is close to but not exactly
// the order JetStream stored the commands; a command applied twice (a
// redelivery after a crash between commit and counting) is counted once
// more; the counters start again from zero if Redis loses them. The
// position is clamped at zero, and a decision always replaces it.

// NoQueue is the queue argument of an order that takes no ticket.
const NoQueue = -1

// Ticket is an order's place in its home partition's line: the zero
// Ticket is none.
type Ticket struct {
	Partition int
	N         int64
}

func (s *Store) queueInKey(p int) string {
	if p == NoQueue {
		return s.key("queue:none:in")
	}
	return s.key("queue:", strconv.Itoa(p), ":in")
}

func (s *Store) queueDoneKey(p int) string     { return s.key("queue:", strconv.Itoa(p), ":done") }
func (s *Store) ticketKey(id uuid.UUID) string { return s.key("qticket:", id.String()) }

// parseTicket reads "<partition>:<n>"; anything else is no ticket.
func parseTicket(v string) Ticket {
	ps, ns, ok := strings.Cut(v, ":")
	if !ok {
		return Ticket{}
	}
	p, err1 := strconv.Atoi(ps)
	n, err2 := strconv.ParseInt(ns, 10, 64)
	if err1 != nil || err2 != nil || p < 0 || n <= 0 {
		return Ticket{}
	}
	return Ticket{Partition: p, N: n}
}

// QueueDone returns how many tickets each of partitions 0..n-1 has served,
// in one round trip.
func (s *Store) QueueDone(ctx context.Context, n int) ([]int64, error) {
	keys := make([]string, n)
	for p := range keys {
		keys[p] = s.queueDoneKey(p)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, statusUnavailable("read queue counters", err)
	}
	done := make([]int64, n)
	for p, v := range vals {
		if str, ok := v.(string); ok {
			done[p], _ = strconv.ParseInt(str, 10, 64)
		}
	}
	return done, nil
}

// queueDone adds the n checkouts partition p applied to its counter, in
// the pipeline p.
func (s *Store) queueDone(ctx context.Context, pipe redis.Pipeliner, p, n int) {
	if n > 0 {
		pipe.IncrBy(ctx, s.queueDoneKey(p), int64(n))
	}
}
