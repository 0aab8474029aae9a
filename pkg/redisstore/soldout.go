package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/order"
)

// Sold-out markers.
//
// soldout:<sku> holds the version of the SKU's row at which a committed
// transaction left its stock at 0; the ingress rejects a checkout naming a
// marked SKU out_of_stock without sending it to the partition. The claim
// that makes this safe:
//
//	while soldout:<sku> exists, the SKU's committed stock is 0.
//
// So a checkout that read the marker could not have been sold a unit at
// that moment: rejecting it is the partition's own decision taken at the
// instant of the read (the rejection is linearizable there). Four rules
// keep the claim true, and a fifth heals what they leave open:
//
//  1. Marking (MarkSoldOut) happens only after the transaction that saw
//     stock 0 committed, with the version that transaction read or wrote
//     under the row lock, never an in-memory guess.
//  2. Every transaction that takes a SKU's stock from 0 to more (restock,
//     cancel, expiry, the release of a rejected or timed-out saga order:
//     they all go through the partition's batch writer) calls Reopen while
//     it still holds the row lock and before it commits: Reopen deletes the
//     marker and raises soldout-floor:<sku> to the version it will commit.
//     If Redis cannot be reached the transaction does not commit: the
//     partition applies its batch without the commands that bring stock
//     back, and those wait until Redis answers (pkg/postgres's
//     soldout.go): stock never comes back while a marker may stand.
//  3. A marker is written only if its version is at least the floor
//     (markScript, atomic in Redis). A stale writer (a worker paused after
//     its commit while another took the partition over and a restock
//     committed) holds a version below the restock's, which raised the
//     floor before it committed: its marker is refused.
//  4. A marker counts only in the incarnation of the Redis server that
//     wrote it (it carries the server's run id, which a restart changes).
//     Redis fsyncs its append-only file once a second: killed, it comes
//     back without the last second of writes, and a Reopen's DEL among
//     them would bring back a marker while the stock it guarded is above
//     0. Markers from before a restart are ignored instead, and the
//     partitions mark again what is still at 0.
//  5. A marker expires SoldOutTTL after it was last written; a batch that
//     leaves the SKU at 0 writes it again (at the same version, renewing
//     it). Expiry only ever removes a marker, which the claim allows
//     (without a marker the checkout goes to its partition, which
//     decides the same), so whatever wrong marker rules 1 to 4 let stand
//     heals by itself within SoldOutTTL.
//
// Proof sketch. Let the marker hold v, written at time w, read at time t.
// Stock was 0 at version v (rule 1). Suppose stock was above 0 at t. Then a
// transaction R committed, before t, a version above v taking stock from 0
// up; R read version u >= v under the lock and, before its commit (so
// before t), deleted the marker and raised the floor to u+1 > v (rule 2).
// If that happened before w, the floor refused v at w (rule 3); if after,
// the marker v was deleted between w and t and nobody can write v again
// (the floor is above it). Either way no marker v exists at t: a
// contradiction. A transaction that only sells (stock >= 0 down) needs no
// Reopen: from a stock above 0 no marker can stand (the last 0 -> up
// transition raised the floor above every version that saw 0).
//
// Only the 0 -> up transition has to pay Reopen's round trip, inside the
// transaction; the markers themselves cost one EVAL per batch that ends at
// 0, after the commit. The floor keys are never deleted (one small key per
// SKU that ever came back from 0). What rule 4 leaves open: a restart that
// loses a floor raise while a stale writer (rule 3) is between its commit
// and its marker, two faults at once; its marker would then stand until
// it expires (rule 5), at most SoldOutTTL. The price of rule 5: once the
// ingress rejects every checkout of a sold-out SKU itself, no batch renews
// its marker, so every SoldOutTTL the checkouts of one batch reach the
// partition, which rejects them and marks the SKU again.

// SoldOutTTL is how long a sold-out marker stands unless a partition
// marks its SKU again (rule 5 above): the longest a wrong marker can keep
// a SKU unsellable at the ingress.
const SoldOutTTL = 10 * time.Second

// markerTTL is the markers' time to live: SoldOutTTL unless a test set
// another.
func (s *Store) markerTTL() time.Duration {
	if s.soldOutTTL > 0 {
		return s.soldOutTTL
	}
	return SoldOutTTL
}

// soldOutKey is the marker of a sold-out SKU, under the store's prefix.
func (s *Store) soldOutKey(sku uuid.UUID) string { return s.key("soldout:", sku.String()) }

// soldOutFloorKey is the lowest version a marker of sku may carry.
func (s *Store) soldOutFloorKey(sku uuid.UUID) string { return s.key("soldout-floor:", sku.String()) }

// runIDLua is the Lua that sets the local run_id to the server's run id,
// which changes whenever the server restarts.
const runIDLua = `local run_id = string.match(redis.call("INFO", "server"), "run_id:(%x+)") or ""
`

// markScript sets markers: KEYS are pairs (marker, floor), ARGV the
// markers' time to live in milliseconds, then the versions, one per pair.
// A marker is "<version>:<run id>"; it is written only if its version is
// at least the floor and at least that of the marker standing in this
// incarnation of the server (the same version again renews its time to
// live). It returns how many it wrote.
var markScript = redis.NewScript(runIDLua + `
local n = 0
for i = 1, #KEYS / 2 do
	local v = tonumber(ARGV[i+1])
	local floor = tonumber(redis.call("GET", KEYS[2*i]) or "-1")
	local cur = -1
	local m = redis.call("GET", KEYS[2*i-1])
	if m then
		local mv, mid = string.match(m, "^(%d+):(%x*)$")
		if mid == run_id then
			cur = tonumber(mv)
		end
	end
	if v >= floor and v >= cur then
		redis.call("SET", KEYS[2*i-1], ARGV[i+1] .. ":" .. run_id, "PX", ARGV[1])
		n = n + 1
	end
end
return n`)

// soldOutScript reads markers: KEYS are the markers; it returns, for each,
// its version if it stands and was written in this incarnation of the
// server, else -1.
var soldOutScript = redis.NewScript(runIDLua + `
local out = {}
for i = 1, #KEYS do
	out[i] = -1
	local m = redis.call("GET", KEYS[i])
	if m then
		local mv, mid = string.match(m, "^(%d+):(%x*)$")
		if mv and mid == run_id then
			out[i] = tonumber(mv)
		end
	end
end
return out`)

// reopenScript deletes markers and raises floors: KEYS are pairs (marker,
// floor), ARGV the new floors, one per pair. A floor never goes down.
var reopenScript = redis.NewScript(`
for i = 1, #ARGV do
	redis.call("DEL", KEYS[2*i-1])
	local floor = tonumber(redis.call("GET", KEYS[2*i]) or "-1")
	if tonumber(ARGV[i]) > floor then
		redis.call("SET", KEYS[2*i], ARGV[i])
	end
end
return #ARGV`)

// pairs returns the (marker, floor) keys and the versions of vs.
func (s *Store) pairs(vs []order.SKUVersion) ([]string, []any) {
	keys := make([]string, 0, 2*len(vs))
	args := make([]any, 0, len(vs))
	for _, v := range vs {
		keys = append(keys, s.soldOutKey(v.SKU), s.soldOutFloorKey(v.SKU))
		args = append(args, v.Version)
	}
	return keys, args
}

// MarkSoldOut marks SKUs sold out at the versions a committed transaction
// left them at stock 0 (in one round trip), for SoldOutTTL, except those
// whose version is below their floor (a stock increase committed after
// it: rule 3 above). It returns how many it marked. A failure leaves checkouts to go through
// their partition, which is always correct: callers log it and go on.
func (s *Store) MarkSoldOut(ctx context.Context, vs []order.SKUVersion) (int, error) {
	if len(vs) == 0 {
		return 0, nil
	}
	keys, versions := s.pairs(vs)
	args := append([]any{s.markerTTL().Milliseconds()}, versions...)
	n, err := markScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("redis mark sold out: %w", err)
	}
	return n, nil
}

// Reopen deletes the sold-out markers of SKUs whose stock a transaction is
// about to take from 0 up, and raises their floors to the versions it will
// commit, in one round trip. It must be called under the SKU row locks and
// before the commit; if it fails, the transaction must not commit (the
// error is EUNAVAILABLE: retry later).
func (s *Store) Reopen(ctx context.Context, vs []order.SKUVersion) error {
	if len(vs) == 0 {
		return nil
	}
	keys, args := s.pairs(vs)
	if err := reopenScript.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("%w: redis reopen sold-out SKUs: %w", order.Errorf(order.EUNAVAILABLE, "the sold-out markers are unavailable"), err)
	}
	return nil
}

// SoldOut reports which of skus are marked sold out, in one round trip
// (a script that reads the markers and keeps those of this incarnation of
// the server). A SKU named twice is looked up once.
func (s *Store) SoldOut(ctx context.Context, skus []uuid.UUID) (map[uuid.UUID]bool, error) {
	vs, err := s.soldOutVersions(ctx, skus)
	if err != nil {
		return nil, fmt.Errorf("%w: redis sold-out markers: %w", order.Errorf(order.EUNAVAILABLE, "the sold-out markers are unavailable"), err)
	}
	var out map[uuid.UUID]bool
	for i, v := range vs {
		if v < 0 {
			continue
		}
		if out == nil {
			out = make(map[uuid.UUID]bool, len(skus))
		}
		out[skus[i]] = true
	}
	return out, nil
}

func (s *Store) soldOutVersions(ctx context.Context, skus []uuid.UUID) ([]int64, error) {
	if len(skus) == 0 {
		return nil, nil
	}
	keys := make([]string, len(skus))
	for i, id := range skus {
		keys[i] = s.soldOutKey(id)
	}
	return s.evalPiped(ctx, soldOutScript, keys).Int64Slice()
}

// SoldOutVersion returns the version sku is marked sold out at, and false
// if it is not marked (for tests and operators).
func (s *Store) SoldOutVersion(ctx context.Context, sku uuid.UUID) (int64, bool, error) {
	vs, err := s.soldOutVersions(ctx, []uuid.UUID{sku})
	if err != nil {
		return 0, false, fmt.Errorf("redis sold-out marker: %w", err)
	}
	if vs[0] < 0 {
		return 0, false, nil
	}
	return vs[0], true, nil
}

// putDecidedScript caches an order the ingress decided itself: KEYS are
// the order's state, its user's index of recent orders and its idempotency
// record; ARGV the order's JSON, the time to live in seconds, the index
// score and member, the index's size and the idempotency record's JSON (""
// for none). The state is written where none or a pending one is cached:
// a decision cached already is its partition's (a retry's checkout got
// there first), and it stands.
var putDecidedScript = redis.NewScript(`
local cur = redis.call("GET", KEYS[1])
if not cur or string.match(cur, '"status":"(%a+)"') == "pending" then
	redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2])
end
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[4])
redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -tonumber(ARGV[5]) - 1)
redis.call("EXPIRE", KEYS[2], ARGV[2])
if ARGV[6] ~= "" then
	redis.call("SET", KEYS[3], ARGV[6], "EX", ARGV[2])
end
return 1`)

// PutDecided caches an order the ingress decided without its partition (a
// sold-out rejection): its state (unless a decision is cached already),
// its entry in its user's recent orders and, if idem is not nil, its
// idempotency record, in one round trip, as PutPending does for a pending
// order.
func (s *Store) PutDecided(ctx context.Context, o *order.Order, idem *order.Idempotency) error {
	data, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode order %s: %w", o.ID, err)
	}
	var rec []byte
	if idem != nil {
		if rec, err = json.Marshal(idem); err != nil {
			return fmt.Errorf("encode idempotency record %s: %w", o.ID, err)
		}
	}
	keys := []string{s.orderKey(o.ID), s.userOrdersKey(o.UserID), s.idemKey(o.ID)}
	err = s.evalPiped(ctx, putDecidedScript, keys, data, int64(StatusTTL.Seconds()),
		o.AcceptedAt.UnixMicro(), o.ID.String(), MaxPendingIndex, rec).Err()
	if err != nil {
		return statusUnavailable("put decided order", err)
	}
	return nil
}

// DropDecided undoes PutDecided's state and index entry for an order whose
// record JetStream did not take, keeping the idempotency record (a retry
// with the same key then republishes the order's checkout).
func (s *Store) DropDecided(ctx context.Context, o *order.Order) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.orderKey(o.ID))
		p.ZRem(ctx, s.userOrdersKey(o.UserID), o.ID.String())
		return nil
	})
	if err != nil {
		return statusUnavailable("drop decided order", err)
	}
	return nil
}
