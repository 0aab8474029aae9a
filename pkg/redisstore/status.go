package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/order"
)

// StatusTTL is how long an order's status stays cached after its last
// change. Past it, readers fall back to PostgreSQL.
const StatusTTL = 24 * time.Hour

func (s *Store) orderKey(id uuid.UUID) string { return s.key("order:", id.String()) }

// cartKey is the hash of one user's cart: SKU id -> quantity, as in the
// design (user_cart_<uid>).
func (s *Store) cartKey(userID string) string { return s.key("user_cart_", userID) }

// A cached state's status is read with a pattern rather than by decoding
// its JSON (a batch writes hundreds): order.Order's status comes before
// its lines, and a string value cannot hold an unescaped quote, so the
// first "status":"..." is the order's.

// statusRankLua defines forward(cur, new): whether a cached state of
// status cur may be replaced by one of status new. Statuses only move
// forward: pending < confirmed < paid, expired, cancelled, rejected (the
// final ones, which no other status replaces). One exception: a cached
// rejection gives way to any decided status. Every writer but the
// ingress's PutDecided writes what the database committed, and the
// database never holds another status for an order it rejected; so a
// cached rejection next to another status from the database is the
// ingress's sold-out decision for an order whose checkout reached its
// partition first (a retry), and the database's decision is the one.
const statusRankLua = `local rank = {pending = 0, confirmed = 1, paid = 2, expired = 2, cancelled = 2, rejected = 2}
local function forward(cur, new)
	if cur == new then
		return true
	end
	if cur == "rejected" then
		return new ~= "pending"
	end
	return (rank[new] or 0) > (rank[cur] or 0)
end
`

// forwardScript caches orders' states unless that would take them back:
// KEYS are the states; ARGV the time to live in seconds, then for each key
// the order's JSON and its status. It returns how many it wrote.
var forwardScript = redis.NewScript(statusRankLua + `
local n = 0
for i = 1, #KEYS do
	local cur = redis.call("GET", KEYS[i])
	if not cur or forward(string.match(cur, '"status":"(%a+)"'), ARGV[2*i+1]) then
		redis.call("SET", KEYS[i], ARGV[2*i], "EX", ARGV[1])
		n = n + 1
	end
end
return n`)

// PutOrders caches the current state of orders (as JSON under order:<id>) in
// one round trip. A cached state is only replaced by a later status
// (forwardScript): a late or repeated write never takes an order back.
func (s *Store) PutOrders(ctx context.Context, orders ...*order.Order) error {
	return s.ApplyDecisions(ctx, orders, nil)
}

// ApplyDecisions caches the state of orders (as PutOrders does: only
// forward) and removes purchased SKUs from carts (user id -> SKU ids), in
// one pipelined round trip. Both steps are idempotent, so a worker repeats
// them when a command is redelivered after its transaction committed, and
// a write that comes late (a worker paused between its commit and its
// cache write) cannot hide a later status.
func (s *Store) ApplyDecisions(ctx context.Context, orders []*order.Order, cartRemovals map[string][]uuid.UUID) error {
	return s.ApplyPartition(ctx, NoQueue, 0, orders, cartRemovals)
}

// ApplyPartition is ApplyDecisions for a batch of partition p that applied
// n checkouts: it also moves p's line on by n (see queue.go), in the same
// round trip.
func (s *Store) ApplyPartition(ctx context.Context, p, n int, orders []*order.Order, cartRemovals map[string][]uuid.UUID) error {
	if len(orders) == 0 && len(cartRemovals) == 0 && (p == NoQueue || n == 0) {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		if len(orders) > 0 {
			keys := make([]string, len(orders))
			args := make([]any, 1, 1+2*len(orders))
			args[0] = int64(StatusTTL / time.Second)
			for i, o := range orders {
				data, err := json.Marshal(o)
				if err != nil {
					return fmt.Errorf("encode order %s: %w", o.ID, err)
				}
				keys[i] = s.orderKey(o.ID)
				args = append(args, data, string(o.Status))
			}
			// Eval, not EvalSha: a pipeline cannot fall back on NOSCRIPT.
			forwardScript.Eval(ctx, pipe, keys, args...)
		}
		for user, skus := range cartRemovals {
			if len(skus) == 0 {
				continue
			}
			fields := make([]string, len(skus))
			for i, id := range skus {
				fields[i] = id.String()
			}
			pipe.HDel(ctx, s.cartKey(user), fields...)
		}
		if p != NoQueue {
			s.queueDone(ctx, pipe, p, n)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis apply decisions: %w", err)
	}
	return nil
}

// PutPendingIfAbsent caches a pending order unless the key already holds a
// state (a decision may have arrived first). It reports whether it wrote.
func (s *Store) PutPendingIfAbsent(ctx context.Context, o *order.Order) (bool, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return false, fmt.Errorf("encode order %s: %w", o.ID, err)
	}
	ok, err := s.rdb.SetNX(ctx, s.orderKey(o.ID), data, StatusTTL).Result()
	if err != nil {
		return false, fmt.Errorf("redis put pending: %w", err)
	}
	return ok, nil
}

// OrderStatus returns the cached order, or an ENOTFOUND error.
func (s *Store) OrderStatus(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, _, err := s.OrderInLine(ctx, id)
	return o, err
}

// OrderInLine returns the cached order and its ticket in its partition's
// line (the zero Ticket if it has none), in one round trip, or an
// ENOTFOUND error.
func (s *Store) OrderInLine(ctx context.Context, id uuid.UUID) (*order.Order, Ticket, error) {
	var state, ticket *redis.StringCmd
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		state = p.Get(ctx, s.orderKey(id))
		ticket = p.Get(ctx, s.ticketKey(id))
	})
	var data []byte
	if err == nil {
		data, err = state.Bytes()
	}
	if errors.Is(err, redis.Nil) {
		return nil, Ticket{}, order.Errorf(order.ENOTFOUND, "order %s is not cached", id)
	}
	if err != nil {
		return nil, Ticket{}, fmt.Errorf("%w: redis get order: %w", order.Errorf(order.EUNAVAILABLE, "the status cache is unavailable"), err)
	}
	var o order.Order
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, Ticket{}, fmt.Errorf("decode cached order %s: %w", id, err)
	}
	return &o, parseTicket(ticket.Val()), nil
}

// DeleteOrder drops an order's cached state.
func (s *Store) DeleteOrder(ctx context.Context, id uuid.UUID) error {
	return s.rdb.Del(ctx, s.orderKey(id)).Err()
}

// MaxPendingIndex bounds how many recent orders the per-user index of
// PutPending remembers.
const MaxPendingIndex = 100

func (s *Store) idemKey(id uuid.UUID) string     { return s.key("idem:", id.String()) }
func (s *Store) idemLockKey(id uuid.UUID) string { return s.key("idemlock:", id.String()) }
func (s *Store) userOrdersKey(userID string) string {
	return s.key("user_orders:", userID)
}

// putPendingScript is PutPending in one round trip: KEYS are the order's
// state, its user's index of recent orders, its idempotency record, its
// partition's queue counter and its ticket; ARGV the order's JSON, the time
// to live in seconds, its index score and member, the index's size, the
// idempotency record's JSON ("" for none) and the partition ("" for none).
// It returns 1 if it wrote the state, 0 if one was cached already (and then
// takes no ticket: the order is not waiting in line any more).
var putPendingScript = redis.NewScript(`
local wrote = redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[4])
redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -tonumber(ARGV[5]) - 1)
redis.call("EXPIRE", KEYS[2], ARGV[2])
if ARGV[6] ~= "" then
	redis.call("SET", KEYS[3], ARGV[6], "EX", ARGV[2])
end
if not wrote then
	return 0
end
if ARGV[7] ~= "" then
	local n = redis.call("INCR", KEYS[4])
	redis.call("SET", KEYS[5], ARGV[7] .. ":" .. n, "EX", ARGV[2])
end
return 1`)

// PutPending caches a pending order as PutPendingIfAbsent does, adds it to
// its user's index of recent orders (RecentOrders), when idem is not nil
// stores the checkout's idempotency record, and, when queue is a partition
// (not NoQueue), gives the order a ticket in that partition's line
// (QueuePosition); all in one round trip. It reports whether the order's
// state was written (false: a state was already cached).
func (s *Store) PutPending(ctx context.Context, o *order.Order, idem *order.Idempotency, queue int) (bool, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return false, fmt.Errorf("encode order %s: %w", o.ID, err)
	}
	var rec []byte
	if idem != nil {
		if rec, err = json.Marshal(idem); err != nil {
			return false, fmt.Errorf("encode idempotency record %s: %w", o.ID, err)
		}
	}
	part := ""
	if queue != NoQueue {
		part = strconv.Itoa(queue)
	}
	keys := []string{s.orderKey(o.ID), s.userOrdersKey(o.UserID), s.idemKey(o.ID), s.queueInKey(queue), s.ticketKey(o.ID)}
	wrote, err := s.evalPiped(ctx, putPendingScript, keys, data, int64(StatusTTL/time.Second),
		o.AcceptedAt.UnixMicro(), o.ID.String(), MaxPendingIndex, rec, part).Int()
	if err != nil {
		return false, statusUnavailable("put pending order", err)
	}
	return wrote == 1, nil
}

// dropPendingScript is DropPending: KEYS are the order's state, its
// ticket, its user's index of recent orders and its partition's done
// counter ("" for none); ARGV the order id. It does nothing unless the
// cached state is still pending: a failed publish may have reached
// JetStream all the same, and a worker's decision, once cached, must stay.
var dropPendingScript = redis.NewScript(`
local v = redis.call("GET", KEYS[1])
if v and cjson.decode(v)["status"] ~= "pending" then
	return 0
end
redis.call("DEL", KEYS[1], KEYS[2])
redis.call("ZREM", KEYS[3], ARGV[1])
if KEYS[4] ~= "" then
	redis.call("INCRBY", KEYS[4], 1)
end
return 1`)

// DropPending undoes PutPending's cached state, index entry and ticket for
// an order whose command was not accepted (its place in line counts as
// served, so the orders behind it move up). It keeps the idempotency
// record, so that a retry with the same key reuses the same order number
// and command. It leaves an order that a worker has decided meanwhile as it
// is: the publish that failed at the ingress may have been stored, and a
// retry's republish of it is then dropped as a duplicate, so nothing would
// cache the decision again.
func (s *Store) DropPending(ctx context.Context, o *order.Order, queue int) error {
	done := ""
	if queue != NoQueue {
		done = s.queueDoneKey(queue)
	}
	keys := []string{s.orderKey(o.ID), s.ticketKey(o.ID), s.userOrdersKey(o.UserID), done}
	if err := s.evalPiped(ctx, dropPendingScript, keys, o.ID.String()).Err(); err != nil {
		return statusUnavailable("drop pending order", err)
	}
	return nil
}

// CacheOrder caches an order read from PostgreSQL unless a state is already
// cached: a worker's newer decision always wins over a reader's copy.
func (s *Store) CacheOrder(ctx context.Context, o *order.Order) error {
	data, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode order %s: %w", o.ID, err)
	}
	if err := s.rdb.SetNX(ctx, s.orderKey(o.ID), data, StatusTTL).Err(); err != nil {
		return statusUnavailable("cache order", err)
	}
	return nil
}

// RecentOrders returns the cached state of up to limit of userID's most
// recent orders placed through PutPending, newest first. Orders whose state
// is no longer cached are left out.
func (s *Store) RecentOrders(ctx context.Context, userID string, limit int) ([]*order.Order, error) {
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.userOrdersKey(userID), Start: 0, Stop: int64(limit) - 1, Rev: true}).Result()
	if err != nil {
		return nil, statusUnavailable("recent orders", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.key("order:", id)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, statusUnavailable("recent orders", err)
	}
	out := make([]*order.Order, 0, len(vals))
	for _, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		var o order.Order
		if err := json.Unmarshal([]byte(str), &o); err != nil {
			continue
		}
		out = append(out, &o)
	}
	return out, nil
}

// Idempotency returns the idempotency record of order id, or an ENOTFOUND
// error.
func (s *Store) Idempotency(ctx context.Context, id uuid.UUID) (*order.Idempotency, error) {
	data, err := s.rdb.Get(ctx, s.idemKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, order.Errorf(order.ENOTFOUND, "no idempotency record for order %s", id)
	}
	if err != nil {
		return nil, statusUnavailable("get idempotency record", err)
	}
	var rec order.Idempotency
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decode idempotency record %s: %w", id, err)
	}
	return &rec, nil
}

// PutIdempotency replaces the idempotency record of order id (to mark it
// published) and renews its time to live.
func (s *Store) PutIdempotency(ctx context.Context, id uuid.UUID, rec *order.Idempotency) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode idempotency record %s: %w", id, err)
	}
	if err := s.rdb.Set(ctx, s.idemKey(id), data, StatusTTL).Err(); err != nil {
		return statusUnavailable("put idempotency record", err)
	}
	return nil
}

// statusUnavailable wraps a Redis failure as EUNAVAILABLE, keeping the cause
// for the log.
func statusUnavailable(op string, err error) error {
	return fmt.Errorf("%w: redis %s: %w", order.Errorf(order.EUNAVAILABLE, "the status cache is unavailable"), op, err)
}
