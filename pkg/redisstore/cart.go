package redisstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/order"
)

// Cart returns userID's cart: SKU id to quantity, read from the hash at
// cartKey(userID). Fields that are not a SKU id, or values that are not an
// integer, cannot have been written by SetCartItem and are left out. It
// returns an EUNAVAILABLE error if Redis does not answer.
func (s *Store) Cart(ctx context.Context, userID string) (map[uuid.UUID]int64, error) {
	var cmd *redis.MapStringStringCmd
	err := s.pipelined(ctx, func(p redis.Pipeliner) { cmd = p.HGetAll(ctx, s.cartKey(userID)) })
	var raw map[string]string
	if err == nil {
		raw, err = cmd.Result()
	}
	if err != nil {
		return nil, unavailable("read cart", err)
	}
	cart := make(map[uuid.UUID]int64, len(raw))
	for k, v := range raw {
		id, err := uuid.Parse(k)
		if err != nil {
			continue
		}
		q, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		cart[id] = q
	}
	return cart, nil
}

// SetCartItem sets the quantity of sku in userID's cart. It returns an
// EUNAVAILABLE error if Redis does not answer.
func (s *Store) SetCartItem(ctx context.Context, userID string, sku uuid.UUID, qty int64) error {
	if err := s.rdb.HSet(ctx, s.cartKey(userID), sku.String(), qty).Err(); err != nil {
		return unavailable("set cart item", err)
	}
	return nil
}

// RemoveCartItem removes sku from userID's cart; removing a SKU the cart
// does not hold is no error. It returns an EUNAVAILABLE error if Redis does
// not answer.
func (s *Store) RemoveCartItem(ctx context.Context, userID string, sku uuid.UUID) error {
	if err := s.rdb.HDel(ctx, s.cartKey(userID), sku.String()).Err(); err != nil {
		return unavailable("remove cart item", err)
	}
	return nil
}

// ClearCart empties userID's cart. It returns an EUNAVAILABLE error if Redis
// does not answer.
func (s *Store) ClearCart(ctx context.Context, userID string) error {
	if err := s.rdb.Del(ctx, s.cartKey(userID)).Err(); err != nil {
		return unavailable("clear cart", err)
	}
	return nil
}

// unavailable wraps a Redis failure as EUNAVAILABLE, keeping the cause for
// the log.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: redis %s: %w", order.Errorf(order.EUNAVAILABLE, "the cart store is unavailable"), op, err)
}
