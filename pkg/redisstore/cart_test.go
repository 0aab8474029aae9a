package redisstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

func TestCart(t *testing.T) {
	t.Parallel()
	s, prefix := redistest.New(t)
	ctx := context.Background()
	a, b := uuid.New(), uuid.New()

	cart, err := s.Cart(ctx, "alice")
	if err != nil || cart == nil || len(cart) != 0 {
		t.Fatalf("empty cart: %v, %v", cart, err)
	}
	for _, step := range []struct {
		sku uuid.UUID
		qty int64
	}{{a, 2}, {b, 1}, {a, 5}} {
		if err := s.SetCartItem(ctx, "alice", step.sku, step.qty); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetCartItem(ctx, "bob", a, 9); err != nil {
		t.Fatal(err)
	}
	get := func(user string) map[uuid.UUID]int64 {
		t.Helper()
		c, err := s.Cart(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if diff := cmp.Diff(map[uuid.UUID]int64{a: 5, b: 1}, get("alice")); diff != "" {
		t.Errorf("alice's cart (-want +got):\n%s", diff)
	}
	// The hash is the design's: user_cart_<uid>, SKU id -> quantity.
	raw, err := s.Client().HGetAll(ctx, prefix+"user_cart_alice").Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{a.String(): "5", b.String(): "1"}, raw); diff != "" {
		t.Errorf("hash (-want +got):\n%s", diff)
	}

	if err := s.RemoveCartItem(ctx, "alice", a); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveCartItem(ctx, "alice", uuid.New()); err != nil {
		t.Errorf("removing an absent SKU: %v", err)
	}
	if diff := cmp.Diff(map[uuid.UUID]int64{b: 1}, get("alice")); diff != "" {
		t.Errorf("after remove (-want +got):\n%s", diff)
	}
	if err := s.ClearCart(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearCart(ctx, "alice"); err != nil {
		t.Errorf("clearing an empty cart: %v", err)
	}
	if c := get("alice"); len(c) != 0 {
		t.Errorf("after clear: %v", c)
	}
	if diff := cmp.Diff(map[uuid.UUID]int64{a: 9}, get("bob")); diff != "" {
		t.Errorf("bob's cart changed (-want +got):\n%s", diff)
	}
}

// TestCartSkipsForeignFields shows that fields SetCartItem cannot have
// written are left out rather than failing the whole cart.
func TestCartSkipsForeignFields(t *testing.T) {
	t.Parallel()
	s, prefix := redistest.New(t)
	ctx := context.Background()
	good := uuid.New()
	err := s.Client().HSet(ctx, prefix+"user_cart_alice", good.String(), "3", "not-a-uuid", "1", uuid.NewString(), "abc", uuid.NewString(), "1.5").Err()
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Cart(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[uuid.UUID]int64{good: 3}, c); diff != "" {
		t.Errorf("cart (-want +got):\n%s", diff)
	}
}

func TestCartUnavailable(t *testing.T) {
	t.Parallel()
	s, err := redisstore.Open(context.Background(), redistest.URL(), "test:closed:")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ctx := context.Background()
	for name, err := range map[string]error{
		"Cart":           func() error { _, err := s.Cart(ctx, "u"); return err }(),
		"SetCartItem":    s.SetCartItem(ctx, "u", uuid.New(), 1),
		"RemoveCartItem": s.RemoveCartItem(ctx, "u", uuid.New()),
		"ClearCart":      s.ClearCart(ctx, "u"),
	} {
		var e *order.Error
		if !errors.As(err, &e) || e.Code != order.EUNAVAILABLE {
			t.Errorf("%s on a closed client: %v, want EUNAVAILABLE", name, err)
		}
	}
}
