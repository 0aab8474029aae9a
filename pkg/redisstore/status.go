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

// StatusTTL is how long an order's status stays cached after its last
// change. Past it, readers fall back to PostgreSQL.
const StatusTTL = 24 * time.Hour

func (s *Store) orderKey(id uuid.UUID) string { return s.key("order:", id.String()) }

// cartKey is the hash of one user's cart: SKU id -> quantity, as in the
// design (user_cart_<uid>).
func (s *Store) cartKey(userID string) string { return s.key("user_cart_", userID) }

// PutOrders caches the current state of orders (as JSON under order:<id>) in
// one round trip.
func (s *Store) PutOrders(ctx context.Context, orders ...*order.Order) error {
	return s.ApplyDecisions(ctx, orders, nil)
}

// ApplyDecisions caches the state of orders and removes purchased SKUs from
// carts (user id -> SKU ids), in one pipelined round trip. Both steps are
// idempotent, so a worker repeats them when a command is redelivered after
// its transaction committed.
func (s *Store) ApplyDecisions(ctx context.Context, orders []*order.Order, cartRemovals map[string][]uuid.UUID) error {
	if len(orders) == 0 && len(cartRemovals) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, o := range orders {
			data, err := json.Marshal(o)
			if err != nil {
				return fmt.Errorf("encode order %s: %w", o.ID, err)
			}
			p.Set(ctx, s.orderKey(o.ID), data, StatusTTL)
		}
		for user, skus := range cartRemovals {
			if len(skus) == 0 {
				continue
			}
			fields := make([]string, len(skus))
			for i, id := range skus {
				fields[i] = id.String()
			}
			p.HDel(ctx, s.cartKey(user), fields...)
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
	data, err := s.rdb.Get(ctx, s.orderKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, order.Errorf(order.ENOTFOUND, "order %s is not cached", id)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: redis get order: %w", order.Errorf(order.EUNAVAILABLE, "the status cache is unavailable"), err)
	}
	var o order.Order
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("decode cached order %s: %w", id, err)
	}
	return &o, nil
}

// DeleteOrder drops an order's cached state.
func (s *Store) DeleteOrder(ctx context.Context, id uuid.UUID) error {
	return s.rdb.Del(ctx, s.orderKey(id)).Err()
}
