package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/redisstore"
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

// idempotencyLockWait is how long a checkout waits for another request
// with the same Idempotency-Key to finish before it answers 409.
const idempotencyLockWait = 2 * time.Second

// checkoutRequest is the body of POST /v1/orders: an address, a payment
// method, and exactly one of a direct purchase (Items) or a cart checkout
// (CartSKUIDs, with the quantities in the caller's cart). A JSON null counts
// as absent.
type checkoutRequest struct {
	AddressID     uuid.UUID           `json:"address_id"`
	PaymentMethod order.PaymentMethod `json:"payment_method"`
	Items         []order.LineRequest `json:"items"`
	CartSKUIDs    []uuid.UUID         `json:"cart_sku_ids"`
}

// accepted is the answer of a checkout: 202 with where to follow the order.
type accepted struct {
	OrderID     uuid.UUID    `json:"order_id"`
	OrderNumber string       `json:"order_number"`
	Status      order.Status `json:"status"`
	Links       orderLinks   `json:"links"`
}

// orderLinks are the URLs of an order's status and its event stream.
type orderLinks struct {
	Self   string `json:"self"`
	Events string `json:"events"`
}

func linksOf(id uuid.UUID) orderLinks {
	self := "/v1/orders/" + id.String()
	return orderLinks{Self: self, Events: self + "/events"}
}

// decodeCheckout reads and checks a checkout body without looking anything
// up: what the fuzz test drives. Every error is an *order.Error with a 4xx
// code.
func decodeCheckout(body io.Reader) (*checkoutRequest, error) {
	var req checkoutRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	return &req, nil
}

// validate checks the shape of the request: an address id, a supported
// payment method, and exactly one of items and cart_sku_ids, each valid on
// its own. It names every field at fault.
func (c *checkoutRequest) validate() error {
	var f order.Fields
	if c.AddressID == uuid.Nil {
		f.Add("address_id", "is required")
	}
	if !c.PaymentMethod.Valid() {
		names := make([]string, len(order.PaymentMethods))
		for i, m := range order.PaymentMethods {
			names[i] = string(m)
		}
		f.Add("payment_method", "must be one of %s", strings.Join(names, ", "))
	}
	var lines error
	switch {
	case c.Items != nil && c.CartSKUIDs != nil:
		f.Add("items", "must not be sent with cart_sku_ids")
		f.Add("cart_sku_ids", "must not be sent with items")
	case c.Items != nil:
		lines = order.ValidateLines(c.Items, "items")
	case c.CartSKUIDs != nil:
		lines = order.ValidateSKUIDs(c.CartSKUIDs, "cart_sku_ids")
	default:
		f.Add("items", "is required unless cart_sku_ids is sent")
		f.Add("cart_sku_ids", "is required unless items is sent")
	}
	f = append(f, order.ErrorFields(lines)...)
	return f.Err("invalid checkout")
}

// hash returns the hex SHA-256 of the request in a canonical form (its
// decoded values re-encoded in a fixed field order), so that two bodies that
// mean the same order hash alike whatever their spacing or key order, and
// an Idempotency-Key reused for another order is told apart. The lines'
// order counts: it decides the order's home partition.
func (c *checkoutRequest) hash() string {
	canon := struct {
		AddressID     uuid.UUID           `json:"address_id"`
		PaymentMethod order.PaymentMethod `json:"payment_method"`
		Items         []order.LineRequest `json:"items,omitempty"`
		CartSKUIDs    []uuid.UUID         `json:"cart_sku_ids,omitempty"`
	}{c.AddressID, c.PaymentMethod, c.Items, c.CartSKUIDs}
	data, _ := json.Marshal(canon) // plain values: cannot fail
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// idempotencyKey returns the request's Idempotency-Key header ("" if it has
// none): one value of 1 to MaxIdempotencyKeyLen printable ASCII characters,
// else an EINVALID error.
func idempotencyKey(r *http.Request) (string, error) {
	vals := r.Header.Values("Idempotency-Key")
	if len(vals) == 0 {
		return "", nil
	}
	bad := func(detail string) error {
		return order.Invalid("invalid Idempotency-Key", order.FieldError{Field: "Idempotency-Key", Detail: detail})
	}
	if len(vals) > 1 {
		return "", bad("must be sent once")
	}
	k := vals[0]
	if len(k) == 0 || len(k) > MaxIdempotencyKeyLen {
		return "", bad(fmt.Sprintf("must be 1 to %d characters", MaxIdempotencyKeyLen))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", bad("must be printable ASCII")
		}
	}
	return k, nil
}

// checkout is POST /v1/orders (SPEC 3.2, the design's order commit). It
// checks the request, assigns the order id and number, caches the pending
// order, publishes the checkout command to the order's home partition and
// answers 202 once JetStream acknowledged it. It never touches stock.
//
// With an Idempotency-Key the order id is derived from (user, key), and
// requests with the same key are serialized by a short Redis lock: a retry
// with the same body gets the first answer again (the same id and number),
// republishing the first command if it may not have reached JetStream; a
// retry with another body gets 422; one that arrives while the first is
// still running waits for it, or gets 409 if it takes too long.
func (s *Server) checkout(w http.ResponseWriter, r *http.Request) error {
	var req checkoutRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	ctx, user := r.Context(), principal(r.Context()).UserID
	hash := req.hash()
	if key == "" {
		_, err := s.placeOrder(w, r, &req, uuid.New(), "", hash)
		return err
	}
	id := order.IdempotentID(user, key)
	claim, err := s.claimIdempotency(ctx, id)
	if err != nil {
		return err
	}
	record, err := s.checkoutClaimed(w, r, &req, claim, id, key, hash)
	if rerr := s.Status.ReleaseIdempotency(ctx, id, claim, record); rerr != nil {
		// The lock expires by itself; an unmarked record only makes a
		// retry republish the command, which is harmless.
		s.log.WarnContext(ctx, "checkout: could not release the idempotency key", "order", id, "err", rerr)
	}
	return err
}

// claimIdempotency takes the lock of one idempotency key and reads its
// record (one Redis round trip), waiting up to idempotencyLockWait for a
// request holding it. It returns ECONFLICT if the lock stays taken.
func (s *Server) claimIdempotency(ctx context.Context, id uuid.UUID) (redisstore.Claim, error) {
	ttl := s.cfg.PublishTimeout + 5*time.Second
	deadline := time.Now().Add(idempotencyLockWait)
	for {
		claim, err := s.Status.ClaimIdempotency(ctx, id, ttl)
		if err != nil || claim.Held {
			return claim, err
		}
		if time.Now().After(deadline) {
			return claim, withRetryAfter(order.Errorf(order.ECONFLICT, "a request with this Idempotency-Key is in progress; retry it shortly"), 1)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return claim, ctx.Err()
		}
	}
}

// checkoutClaimed answers a checkout whose Idempotency-Key this request
// holds. A key whose Redis record exists was seen before: the same body
// gets the first answer again, and the first command is republished if it
// was never acknowledged (the first attempt failed, or its process died
// before the ack: the command id is the order id, so JetStream drops a
// duplicate within its window and the partition skips an order it has
// already written after it). Otherwise the order is placed, unless
// PostgreSQL knows the key (placeOrder). It returns the key's record to
// store if the request changed it: marked published when the request
// published its command, or with a new command id when a publish failed
// (publishCheckout).
func (s *Server) checkoutClaimed(w http.ResponseWriter, r *http.Request, req *checkoutRequest, claim redisstore.Claim, id uuid.UUID, key, hash string) (*order.Idempotency, error) {
	rec := claim.Record
	if rec == nil {
		return s.placeOrder(w, r, req, id, key, hash)
	}
	if rec.RequestHash != hash {
		return nil, errKeyReused()
	}
	var changed *order.Idempotency
	if !rec.Published {
		if err := s.publishCheckout(r.Context(), rec.Command, rec); err != nil {
			return rec, err
		}
		rec.Published = true
		changed = rec
	}
	writeAccepted(w, rec.Command.Checkout.OrderID, rec.Command.Checkout.OrderNumber, true)
	return changed, nil
}

// errKeyReused is the answer to an Idempotency-Key sent again with another
// body.
func errKeyReused() error {
	return order.Invalid("this Idempotency-Key was used for a different request",
		order.FieldError{Field: "Idempotency-Key", Detail: "was already used with another body; use a new key for a new order"})
}

// placeOrder runs the checks that need the stores (the address is the
// caller's, the cart holds the SKUs, no SKU's sale is paused), builds the
// checkout command and publishes it. An order that PostgreSQL already
// holds for the Idempotency-Key (its Redis record was lost or expired) is
// answered as a replay instead; so is a key claimed by an earlier request
// whose order is not written yet (claimKey). It returns the idempotency
// record to store, if any (see checkoutClaimed).
func (s *Server) placeOrder(w http.ResponseWriter, r *http.Request, req *checkoutRequest, id uuid.UUID, key, hash string) (*order.Idempotency, error) {
	ctx, user := r.Context(), principal(r.Context()).UserID
	lines, prices, soldOut, facts, err := s.checkoutFacts(ctx, user, req, key, hash)
	if err != nil {
		return nil, err
	}
	if p := facts.Prior; p != nil {
		if facts.PriorHash != "" && facts.PriorHash != hash {
			return nil, errKeyReused()
		}
		writeAccepted(w, p.ID, p.Number, true)
		return nil, nil
	}
	cmd, err := s.checkoutCommand(ctx, user, req, id, key, hash, lines, prices)
	if err != nil {
		return nil, err
	}
	claim, err := s.claimKey(ctx, &cmd, facts.Claim)
	if err != nil {
		return nil, err
	}
	var rec *order.Idempotency
	if key != "" {
		rec = &order.Idempotency{RequestHash: hash, Command: cmd}
	}
	if len(soldOut) > 0 && claim == nil {
		// A SKU is sold out: rejected here, recorded without the
		// partition (soldout.go). A retry of a claimed key goes to the
		// partition, as a retry of a Redis record does.
		if err := s.rejectSoldOut(ctx, cmd, soldOut, rec); err != nil {
			return nil, err
		}
	} else if err := s.publishCheckout(ctx, cmd, rec); err != nil {
		return rec, err
	}
	writeAccepted(w, cmd.Checkout.OrderID, cmd.Checkout.OrderNumber, claim != nil)
	if rec != nil {
		rec.Published = true
	}
	return rec, nil
}

// checkoutCommand builds the checkout command of a new order: id, a new
// order number, the lines and their quoted prices.
func (s *Server) checkoutCommand(ctx context.Context, user string, req *checkoutRequest, id uuid.UUID, key, hash string, lines []order.LineRequest, prices map[uuid.UUID]int64) (order.Command, error) {
	seq, err := s.Numbers.NextOrderSeq(ctx)
	if err != nil {
		return order.Command{}, err
	}
	// PostgreSQL keeps microseconds: the time the cache and the database
	// hold must be the same for the order list's keyset to line up.
	now := time.Now().UTC().Truncate(time.Microsecond)
	cmd := order.Command{
		ID:        id,
		Kind:      order.KindCheckout,
		Partition: order.HomePartition(lines, s.cfg.Partitions),
		At:        now,
		Checkout: &order.Checkout{
			OrderID:        id,
			OrderNumber:    order.NumberFor(now, seq),
			UserID:         user,
			AddressID:      req.AddressID,
			PaymentMethod:  req.PaymentMethod,
			Lines:          lines,
			ShippingFee:    s.cfg.ShippingFee,
			IdempotencyKey: key,
			RequestHash:    hash,
			FromCart:       req.CartSKUIDs != nil,
			Prices:         prices,
		},
	}
	if err := cmd.Validate(cmd.Partition, s.cfg.Partitions); err != nil {
		return order.Command{}, fmt.Errorf("checkout built an invalid command: %v", err) // a bug: 500
	}
	return cmd, nil
}

// claimKey makes a keyed checkout's claim on its Idempotency-Key durable
// in PostgreSQL before its command is published (postgres ClaimKey), so
// that the key is told apart from another request reusing it even after
// Redis lost its record and before the partition writes the order (the
// partition cannot help: of two commands for one order id, it applies
// whichever comes first, and the other buyer has had a 202 already).
//
// If the key was claimed before (claim, from CheckoutFacts, or found by
// ClaimKey), this request is a retry of that checkout whose Redis record
// was lost: with another body it is 422; with the same body, cmd takes the
// claim's order number, so the answer is the first one, and a new command
// id, because the first one's may have been abandoned (publishOrder). The
// partition applies whichever of the two commands arrives first and skips
// the other (same order id). It returns the earlier claim, or nil.
//
// This costs a PostgreSQL write per keyed checkout, batched like
// CheckoutFacts; the cheaper ways fall short: JetStream's dedupe window
// (PubAck.Duplicate) covers two minutes and a lone message only, and a
// verdict from the partition would make every keyed checkout wait for its
// decision, since a first use and a lost record look alike.
func (s *Server) claimKey(ctx context.Context, cmd *order.Command, claim *order.KeyClaim) (*order.KeyClaim, error) {
	k := cmd.Checkout
	if k.IdempotencyKey == "" {
		return nil, nil
	}
	if claim == nil {
		var err error
		claim, err = s.Orders.ClaimKey(ctx, order.KeyClaim{OrderID: k.OrderID, RequestHash: k.RequestHash, OrderNumber: k.OrderNumber})
		if err != nil || claim == nil {
			return nil, err
		}
	}
	if claim.RequestHash != k.RequestHash {
		return nil, errKeyReused()
	}
	cmd.ID = uuid.New()
	k.OrderNumber = claim.OrderNumber
	return claim, nil
}

// checkoutFacts checks what the request names against the stores and
// returns the order's lines: the address must be one of the caller's, a
// cart checkout's SKUs must be in the caller's cart with a quantity (which
// the lines snapshot), and no SKU's sale may be paused. PostgreSQL answers
// the address and the Idempotency-Key in one query while Redis reads the
// cart and the lines' sold-out markers. Field errors of both checks come in
// one 422. It also returns the SKUs' current prices (the order's quote),
// the lines' SKUs marked sold out (soldout.go) and the facts, with the
// key's claim if it has one; or, before any check, the facts naming the
// order an earlier request with the key placed, or EINVALID if the key's
// claim is another request's (hash).
func (s *Server) checkoutFacts(ctx context.Context, user string, req *checkoutRequest, key, hash string) (lines []order.LineRequest, prices map[uuid.UUID]int64, soldOut []uuid.UUID, facts order.CheckoutFacts, err error) {
	var (
		wg      sync.WaitGroup
		factErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		facts, factErr = s.Orders.CheckoutFacts(ctx, user, req.AddressID, key)
	}()
	lines, cartErr := s.checkoutLines(ctx, user, req)
	var (
		paused  map[uuid.UUID]bool
		soldErr error
	)
	if cartErr == nil {
		paused, prices = s.quoteSKUs(ctx, lines)
		soldOut, soldErr = s.soldOutLines(ctx, lines)
	}
	wg.Wait()
	switch {
	case factErr != nil:
		return nil, nil, nil, facts, factErr
	case facts.Prior != nil:
		return nil, nil, nil, facts, nil
	case facts.Claim != nil && facts.Claim.RequestHash != hash:
		return nil, nil, nil, facts, errKeyReused()
	}
	var f order.Fields
	if !facts.AddressOK {
		f.Add("address_id", "is not one of your addresses")
	}
	switch order.ErrorCode(cartErr) {
	case "":
	case order.EINVALID:
		f = append(f, order.ErrorFields(cartErr)...)
	default:
		return nil, nil, nil, facts, cartErr
	}
	if err := f.Err("the order cannot be placed"); err != nil {
		return nil, nil, nil, facts, err
	}
	for _, l := range lines {
		if paused[l.SKUID] {
			return nil, nil, nil, facts, order.Errorf(order.EPAUSED, "the sale of SKU %s is paused", l.SKUID)
		}
	}
	if soldErr != nil {
		return nil, nil, nil, facts, soldErr
	}
	return lines, prices, soldOut, facts, nil
}

// checkoutLines returns the order's lines: the items of a direct purchase,
// or the selected SKUs with the quantities in the caller's cart. A selected
// SKU that the cart does not hold, holds with quantity 0, or holds more of
// than one line may is an EINVALID error naming it.
func (s *Server) checkoutLines(ctx context.Context, user string, req *checkoutRequest) ([]order.LineRequest, error) {
	if req.Items != nil {
		return req.Items, nil
	}
	cart, err := s.Carts.Cart(ctx, user)
	if err != nil {
		return nil, err
	}
	var f order.Fields
	lines := make([]order.LineRequest, 0, len(req.CartSKUIDs))
	for i, id := range req.CartSKUIDs {
		name := fmt.Sprintf("cart_sku_ids[%d]", i)
		switch q := cart[id]; {
		case q <= 0:
			f.Add(name, "SKU %s is not in your cart", id)
		case q > order.MaxLineQty:
			f.Add(name, "your cart holds %d of SKU %s, more than the %d one order line may hold", q, id, order.MaxLineQty)
		default:
			lines = append(lines, order.LineRequest{SKUID: id, Quantity: q})
		}
	}
	if err := f.Err("the cart does not hold these SKUs"); err != nil {
		return nil, err
	}
	return lines, nil
}

// quoteSKUs returns which of the lines' SKUs have their sale paused, and
// the current prices of those that exist (the order's quote, which the
// partition charges even if the price changes before it decides), from the
// in-process SKU cache (skucache.go): no PostgreSQL query per checkout. The
// partition rejects a paused SKU's order anyway (sale_paused); this early
// check only spares the buyer the wait, so when the catalog cannot be read
// it logs and lets the order through unquoted (the partition then prices
// it when it decides).
func (s *Server) quoteSKUs(ctx context.Context, lines []order.LineRequest) (map[uuid.UUID]bool, map[uuid.UUID]int64) {
	ids := make([]uuid.UUID, len(lines))
	for i, l := range lines {
		ids[i] = l.SKUID
	}
	skus, err := s.skus.get(ctx, ids)
	if err != nil {
		s.log.WarnContext(ctx, "checkout: cannot read the SKUs for the pause check; the partition will check", "err", err)
		return nil, nil
	}
	var paused map[uuid.UUID]bool
	var prices map[uuid.UUID]int64
	for id, sku := range skus {
		if sku.Paused {
			if paused == nil {
				paused = make(map[uuid.UUID]bool)
			}
			paused[id] = true
		}
		if prices == nil {
			prices = make(map[uuid.UUID]int64, len(skus))
		}
		prices[id] = sku.Price
	}
	return paused, prices
}

// pendingOrder is what the status cache holds for a checkout until its
// partition decides it: no prices yet.
func pendingOrder(cmd order.Command) *order.Order {
	c := cmd.Checkout
	lines := make([]order.Line, len(c.Lines))
	for i, l := range c.Lines {
		lines[i] = order.Line{SKUID: l.SKUID, Quantity: l.Quantity}
	}
	return &order.Order{
		ID:            c.OrderID,
		Number:        c.OrderNumber,
		UserID:        c.UserID,
		AddressID:     c.AddressID,
		PaymentMethod: c.PaymentMethod,
		Status:        order.StatusPending,
		Lines:         lines,
		ShippingFee:   c.ShippingFee,
		AcceptedAt:    cmd.At,
		UpdatedAt:     cmd.At,
	}
}

// publishCheckout caches the pending order (and the idempotency record rec,
// if any), giving it a ticket in its partition's line, and publishes the
// command, waiting up to the publish timeout for JetStream's ack
// (publishOrder). If the publish fails, the pending order is taken out of
// the cache again, so that nothing of it is visible, and the error is
// EUNAVAILABLE with a Retry-After; rec stays unpublished, so that a retry
// with the same key republishes the same command, under a new command id
// that this sets in rec: no partition applies the failed one
// (publishOrder), and the caller stores rec again.
func (s *Server) publishCheckout(ctx context.Context, cmd order.Command, rec *order.Idempotency) error {
	pending := pendingOrder(cmd)
	wrote, err := s.Status.PutPending(ctx, pending, rec, cmd.Partition)
	if err != nil {
		return err
	}
	if err := s.publishOrder(ctx, cmd); err != nil {
		if wrote {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if derr := s.Status.DropPending(dctx, pending, cmd.Partition); derr != nil {
				s.log.ErrorContext(ctx, "checkout: could not remove the pending order of a failed publish", "order", cmd.Checkout.OrderID, "err", derr)
			}
			cancel()
		}
		if rec != nil {
			rec.Command.ID = uuid.New()
		}
		return err
	}
	return nil
}

// settleTimeout bounds the database write that settles a checkout whose
// publish failed (publishOrder).
const settleTimeout = 5 * time.Second

// publishOrder publishes the command that places an order (a checkout, or
// the record of a rejection the ingress decided, soldout.go) and makes its
// error true: a checkout answered 503 is never placed (SPEC 3.2: nothing
// half-written).
//
// A publish can fail after the message carrying the command left the
// process (JetStream slow, paused or cut off before its PubAck): the
// message may be stored now or later, and then applied. Waiting longer
// does not make that known, so the command is settled in PostgreSQL
// instead, where the partitions (and the writer of ingress rejections)
// record what they applied (postgres.AbandonCommand): if one applied it
// already, the checkout succeeded after all and the answer is 202;
// otherwise it is recorded as processed, nobody will apply it, and the
// 503 is true. When the publisher knows the command was never sent
// (natsbus.ErrNotPublished), there is nothing to settle. If PostgreSQL
// cannot be written either (a second fault), the outcome stays unknown:
// the answer is 503, and the error is logged.
func (s *Server) publishOrder(ctx context.Context, cmd order.Command) error {
	err := s.publish(ctx, cmd)
	if err == nil || errors.Is(err, natsbus.ErrNotPublished) {
		return err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	applied, serr := s.Orders.AbandonCommand(sctx, cmd.ID, cmd.Partition)
	switch {
	case serr != nil:
		s.log.ErrorContext(ctx, "checkout: answered 503, but its command may still be stored and applied: it could not be settled",
			"command", cmd.ID, "kind", cmd.Kind, "publish_err", err, "err", serr)
	case applied:
		return nil
	}
	return err
}

// publish publishes one command, waiting up to the publish timeout for the
// ack. Any failure is EUNAVAILABLE (503 with Retry-After): the command may
// or may not be stored, and retrying it is safe.
func (s *Server) publish(ctx context.Context, cmd order.Command) error {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	err := s.Publisher.Publish(pctx, cmd)
	if err == nil {
		return nil
	}
	if order.ErrorCode(err) != order.EUNAVAILABLE {
		err = fmt.Errorf("%w: %w", order.Errorf(order.EUNAVAILABLE, "the order queue is unavailable, try again"), err)
	}
	return withRetryAfter(err, 1)
}

// writeAccepted answers 202 with the order's id, number and links. A replay
// of an earlier answer (same Idempotency-Key and body) says so in the
// Idempotent-Replayed header.
func writeAccepted(w http.ResponseWriter, id uuid.UUID, number string, replayed bool) {
	links := linksOf(id)
	w.Header().Set("Location", links.Self)
	w.Header().Set("Cache-Control", "no-store")
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, accepted{OrderID: id, OrderNumber: number, Status: order.StatusPending, Links: links})
}
