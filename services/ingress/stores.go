package ingress

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
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
	// CreateAddress stores a validated address for user, or returns
	// ECONFLICT if the user keeps the most addresses allowed.
	CreateAddress(ctx context.Context, userID string, a *order.NewAddress) (*order.Address, error)
	// AddressPage lists up to limit of user's addresses after cursor
	// ("": the first page), newest (the default) first, and returns the
	// next page's cursor ("" on the last); a bad cursor is EINVALID.
	AddressPage(ctx context.Context, userID, cursor string, limit int) ([]order.Address, string, error)
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
// partition has written them (pkg/postgres). Every method returns
// EUNAVAILABLE when the database is unreachable.
type OrderStore interface {
	// Order returns an order with its lines, or ENOTFOUND.
	Order(ctx context.Context, id uuid.UUID) (*order.Order, error)
	// OrdersByUser returns up to limit of the user's orders with their
	// lines, newest first (accepted_at, id descending), after the opaque
	// cursor ("" for the first page), and the next page's cursor ("" on
	// the last). An invalid cursor is EINVALID on the field "cursor".
	OrdersByUser(ctx context.Context, userID, cursor string, limit int) ([]order.Order, string, error)
	// CheckoutFacts tells, in one query, whether the address is the
	// user's, and which order an earlier request with the Idempotency-Key
	// placed, or else its claim (none for key "").
	CheckoutFacts(ctx context.Context, userID string, addressID uuid.UUID, key string) (order.CheckoutFacts, error)
	// ClaimKey records the claim of a checkout on its Idempotency-Key
	// before its command is published, unless the key has one: then it
	// returns that one and stores nothing.
	ClaimKey(ctx context.Context, c order.KeyClaim) (prior *order.KeyClaim, err error)
	// AbandonCommand makes sure nobody applies a command whose publish
	// failed, unless somebody did already: then it reports applied.
	AbandonCommand(ctx context.Context, id uuid.UUID, partition int) (applied bool, err error)
}

// StatusCache holds the current state of recent orders where polling it is
// cheap (pkg/redisstore): the ingress writes pending orders, the workers
// write decisions. Every method returns EUNAVAILABLE when Redis does not
// answer.
type StatusCache interface {
	// OrderStatus returns the cached order, or ENOTFOUND.
	OrderStatus(ctx context.Context, id uuid.UUID) (*order.Order, error)
	// OrderInLine returns the cached order and its ticket in its
	// partition's line (zero if none), or ENOTFOUND.
	OrderInLine(ctx context.Context, id uuid.UUID) (*order.Order, redisstore.Ticket, error)
	// QueueDone returns how many tickets each of partitions 0..n-1 served.
	QueueDone(ctx context.Context, n int) ([]int64, error)
	// PutPending caches a pending order unless a state is already cached
	// (reporting whether it wrote), indexes it among its user's recent
	// orders, stores idem (if not nil) as the checkout's idempotency
	// record and gives the order a ticket in partition queue's line, all
	// at once.
	PutPending(ctx context.Context, o *order.Order, idem *order.Idempotency, queue int) (bool, error)
	// DropPending removes what PutPending cached for an order whose command
	// was not accepted, except the idempotency record.
	DropPending(ctx context.Context, o *order.Order, queue int) error
	// CacheOrder caches an order read from PostgreSQL unless a state is
	// already cached.
	CacheOrder(ctx context.Context, o *order.Order) error
	// RecentOrders returns the cached state of up to limit of the user's
	// most recent orders placed through PutPending, newest first.
	RecentOrders(ctx context.Context, userID string, limit int) ([]*order.Order, error)
	// ClaimIdempotency takes the short lock that serializes checkouts with
	// one idempotency key (named by the order id it derives) and reads the
	// key's record, at once. A claim not Held is another request's.
	ClaimIdempotency(ctx context.Context, id uuid.UUID, ttl time.Duration) (redisstore.Claim, error)
	// ReleaseIdempotency gives a claim back, first storing published (if
	// not nil) as the key's record.
	ReleaseIdempotency(ctx context.Context, id uuid.UUID, c redisstore.Claim, published *order.Idempotency) error
}

// Publisher publishes commands to JetStream and waits for the ack
// (pkg/natsbus). An error means the command may or may not be stored,
// unless it wraps natsbus.ErrNotPublished (it was never sent);
// republishing the same command (same id) is harmless.
type Publisher interface {
	Publish(ctx context.Context, cmd order.Command) error
}

// NumberSource hands out order number sequence values, unique across every
// ingress process and restart (pkg/postgres: *DB, or an OrderNumbers).
type NumberSource interface {
	NextOrderSeq(ctx context.Context) (int64, error)
}

// Waiter wakes long-polls and SSE streams when an order changes: it is fed
// by the order events (pkg/natsbus Hub).
type Waiter interface {
	// Wait returns a channel that receives the order each time it changes,
	// and a function that stops the delivery. The orders received must not
	// be modified. The channel is closed when the waiter shuts down.
	Wait(id uuid.UUID) (<-chan *order.Order, func())
	// Recent returns the latest state seen of order id, or nil: the
	// events can overtake the status cache by a moment.
	Recent(id uuid.UUID) *order.Order
}

// DeadLetterStore lists the dead letters and records their replay
// (pkg/postgres). Every method returns EUNAVAILABLE when the database is
// unreachable.
type DeadLetterStore interface {
	// DeadLetters returns up to limit dead letters with ids below before
	// (0: from the newest), newest first.
	DeadLetters(ctx context.Context, before int64, limit int) ([]postgres.DeadLetter, error)
	// DeadLetter returns one dead letter, or ENOTFOUND.
	DeadLetter(ctx context.Context, id int64) (*postgres.DeadLetter, error)
	// MarkDeadLetterReplayed marks a dead letter replayed and returns it,
	// with first false if it was already; ENOTFOUND if there is none.
	MarkDeadLetterReplayed(ctx context.Context, id int64) (*postgres.DeadLetter, bool, error)
}

// Replayer publishes a dead letter's payload again on its original
// subject, as a new message with msgID as its Nats-Msg-Id (pkg/natsbus
// Publisher).
type Replayer interface {
	Replay(ctx context.Context, subject string, payload []byte, msgID string) error
}

// Reconciler compares each SKU's stock counter with the orders and the
// order events (cmd/orderd wires pkg/postgres and pkg/natsbus).
type Reconciler interface {
	Reconcile(ctx context.Context) ([]order.Reconciliation, error)
}
