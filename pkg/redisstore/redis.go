// Package redisstore holds what the service keeps in Redis (go-redis v9):
// each user's cart, one hash per user as in the design, and the cache of
// order status that clients poll. Every key starts with a prefix so that
// tests (and several deployments) can share one server.
package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/batch"
)

// Store wraps a Redis client and the key prefix.
type Store struct {
	rdb    *redis.Client
	prefix string
	pipe   *batch.Batcher[pipeRequest, struct{}] // the hot paths' shared pipelines (pipeline.go)

	soldOutTTL time.Duration // the sold-out markers' time to live, if not SoldOutTTL (tests)
}

// Open connects to the Redis server at url (redis://host:port/db) and checks
// that it answers. Every key is written under prefix.
func Open(ctx context.Context, url, prefix string) (*Store, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("ping redis: %w", err)
	}
	return &Store{rdb: rdb, prefix: prefix, pipe: newPipeBatcher(rdb)}, nil
}

// Client returns the underlying client.
func (s *Store) Client() *redis.Client { return s.rdb }

// Ping checks that Redis answers (for readiness).
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Close closes the client.
func (s *Store) Close() error { return s.rdb.Close() }

func (s *Store) key(parts ...string) string {
	k := s.prefix
	for _, p := range parts {
		k += p
	}
	return k
}
