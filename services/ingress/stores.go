package ingress

import (
	"context"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// SKUStore reads and creates SKUs (pkg/postgres).
type SKUStore interface {
	// CreateSKU stores a validated new SKU.
	CreateSKU(ctx context.Context, n *order.NewSKU) (*order.SKU, error)
	// SKU returns one SKU, or an ENOTFOUND error.
	SKU(ctx context.Context, id uuid.UUID) (*order.SKU, error)
	// SKUsByID returns the SKUs among ids that exist, keyed by id.
	SKUsByID(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]*order.SKU, error)
	// ListSKUs returns up to limit SKUs ordered by id, after the id after
	// (uuid.Nil for the first page).
	ListSKUs(ctx context.Context, after uuid.UUID, limit int) ([]order.SKU, error)
}

// AddressStore keeps users' shipping addresses (pkg/postgres).
type AddressStore interface {
	// CreateAddress stores a validated address for user.
	CreateAddress(ctx context.Context, userID string, a *order.NewAddress) (*order.Address, error)
	// Addresses lists user's addresses, newest (the default) first.
	Addresses(ctx context.Context, userID string) ([]order.Address, error)
	// Address returns one of user's addresses, or ENOTFOUND if it does not
	// exist, was deleted, or is another user's.
	Address(ctx context.Context, userID string, id uuid.UUID) (*order.Address, error)
	// DefaultAddress returns user's newest address, or nil if none.
	DefaultAddress(ctx context.Context, userID string) (*order.Address, error)
	// DeleteAddress deletes one of user's addresses, or returns ENOTFOUND.
	DeleteAddress(ctx context.Context, userID string, id uuid.UUID) error
}

// CartStore keeps users' carts, one Redis hash per user (pkg/redisstore).
type CartStore interface {
	// Cart returns user's cart: SKU id to quantity.
	Cart(ctx context.Context, userID string) (map[uuid.UUID]int64, error)
	// SetCartItem sets the quantity of one SKU.
	SetCartItem(ctx context.Context, userID string, sku uuid.UUID, qty int64) error
	// RemoveCartItem removes one SKU; removing an absent one is no error.
	RemoveCartItem(ctx context.Context, userID string, sku uuid.UUID) error
	// ClearCart empties user's cart.
	ClearCart(ctx context.Context, userID string) error
}

// OrderStore reads orders from PostgreSQL, the source of truth once a
// partition has decided them (pkg/postgres).
type OrderStore interface {
	// Order returns an order with its lines, or ENOTFOUND.
	Order(ctx context.Context, id uuid.UUID) (*order.Order, error)
}

// StatusCache holds the current status of recent orders where polling it is
// cheap (pkg/redisstore): the ingress writes pending orders, the workers
// write decisions.
type StatusCache interface {
	// OrderStatus returns the cached order, or ENOTFOUND.
	OrderStatus(ctx context.Context, id uuid.UUID) (*order.Order, error)
}

// Publisher publishes commands to JetStream and waits for the ack
// (pkg/natsbus).
type Publisher interface {
	Publish(ctx context.Context, cmd order.Command) error
}

// NumberSource hands out unique order number sequence values (pkg/postgres).
type NumberSource interface {
	NextOrderSeq(ctx context.Context) (int64, error)
}

// Waiter wakes long-polls and SSE streams when an order changes: it is fed
// by the ORDER_EVENTS stream.
type Waiter interface {
	// Wait returns a channel that receives the order each time it changes,
	// and a function that stops the subscription.
	Wait(id uuid.UUID) (<-chan *order.Order, func())
}
