package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/order"
)

// Claim is a checkout's hold on its Idempotency-Key, from ClaimIdempotency:
// the lock's token, and the key's record as it was when the lock was taken.
type Claim struct {
	// Held reports whether the lock was taken; false: another request
	// holds it, and Record is not read.
	Held bool
	// Record is the key's idempotency record, or nil if it has none.
	Record *order.Idempotency

	token string
}

// ClaimIdempotency takes the short lock that serializes checkouts with one
// idempotency key (named by the order id it derives), SET NX with ttl, and
// reads the key's record in the same round trip. A claim that is Held must
// be given back with ReleaseIdempotency.
func (s *Store) ClaimIdempotency(ctx context.Context, id uuid.UUID, ttl time.Duration) (Claim, error) {
	token := uuid.NewString()
	var (
		lock *redis.BoolCmd
		rec  *redis.StringCmd
	)
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		lock = p.SetNX(ctx, s.idemLockKey(id), token, ttl)
		rec = p.Get(ctx, s.idemKey(id))
	})
	if err == nil {
		err = lock.Err()
	}
	if err != nil {
		return Claim{}, statusUnavailable("claim idempotency key", err)
	}
	if !lock.Val() {
		return Claim{}, nil
	}
	c := Claim{Held: true, token: token}
	data, err := rec.Bytes()
	if errors.Is(err, redis.Nil) {
		return c, nil
	}
	if err != nil {
		s.release(ctx, id, c, nil)
		return Claim{}, statusUnavailable("read idempotency record", err)
	}
	var r order.Idempotency
	if err := json.Unmarshal(data, &r); err != nil {
		s.release(ctx, id, c, nil)
		return Claim{}, fmt.Errorf("decode idempotency record %s: %w", id, err)
	}
	c.Record = &r
	return c, nil
}

// releaseScript stores the idempotency record ARGV[2] (if not empty) with
// time to live ARGV[3] seconds, then deletes the lock KEYS[1] if it still
// holds the caller's token ARGV[1]: a holder whose lock expired cannot
// release the next holder's. One round trip.
var releaseScript = redis.NewScript(`
if ARGV[2] ~= "" then
	redis.call("SET", KEYS[2], ARGV[2], "EX", ARGV[3])
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// ReleaseIdempotency gives back a claim taken by ClaimIdempotency. When
// published is not nil, it first replaces the key's record with it (a
// checkout marks its record published this way), in the same round trip.
// It does not wait on ctx's cancellation: a request that ends must still
// release its lock.
func (s *Store) ReleaseIdempotency(ctx context.Context, id uuid.UUID, c Claim, published *order.Idempotency) error {
	if !c.Held {
		return nil
	}
	return s.release(ctx, id, c, published)
}

func (s *Store) release(ctx context.Context, id uuid.UUID, c Claim, rec *order.Idempotency) error {
	var data []byte
	if rec != nil {
		var err error
		if data, err = json.Marshal(rec); err != nil {
			return fmt.Errorf("encode idempotency record %s: %w", id, err)
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := s.evalPiped(rctx, releaseScript, []string{s.idemLockKey(id), s.idemKey(id)},
		c.token, data, int64(StatusTTL/time.Second)).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return statusUnavailable("release idempotency key", err)
	}
	return nil
}
