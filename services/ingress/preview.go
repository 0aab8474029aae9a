package ingress

import (
	"context"
	"net/http"
	"sync"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// previewRequest is the body of POST /v1/checkout/preview: exactly one of a
// direct purchase (Items) or a cart checkout (CartSKUIDs, priced with the
// quantities in the caller's cart). A JSON null counts as absent.
type previewRequest struct {
	Items      []order.LineRequest `json:"items"`
	CartSKUIDs []uuid.UUID         `json:"cart_sku_ids"`
}

// previewResponse is the answer of POST /v1/checkout/preview: the quote and
// the address the order would ship to by default (null if the caller has
// none).
type previewResponse struct {
	*order.Quote
	Address *addressView `json:"address"`
}

// validate checks the shape of the request without looking anything up:
// exactly one of items and cart_sku_ids, each valid on its own.
func (p *previewRequest) validate() error {
	switch {
	case p.Items != nil && p.CartSKUIDs != nil:
		return order.Invalid("send either items (direct purchase) or cart_sku_ids (cart checkout), not both",
			order.FieldError{Field: "items", Detail: "must not be sent with cart_sku_ids"},
			order.FieldError{Field: "cart_sku_ids", Detail: "must not be sent with items"})
	case p.Items != nil:
		return order.ValidateLines(p.Items, "items")
	case p.CartSKUIDs != nil:
		return order.ValidateSKUIDs(p.CartSKUIDs, "cart_sku_ids")
	}
	return order.Invalid("send items (direct purchase) or cart_sku_ids (cart checkout)",
		order.FieldError{Field: "items", Detail: "is required unless cart_sku_ids is sent"},
		order.FieldError{Field: "cart_sku_ids", Detail: "is required unless items is sent"})
}

// skuIDs returns the SKU ids the request names.
func (p *previewRequest) skuIDs() []uuid.UUID {
	if p.Items == nil {
		return p.CartSKUIDs
	}
	ids := make([]uuid.UUID, len(p.Items))
	for i, l := range p.Items {
		ids[i] = l.SKUID
	}
	return ids
}

// preview is POST /v1/checkout/preview (SPEC 3.1, the design's order
// preview): it prices a direct purchase or the selected cart lines with
// the SKUs' prices and stock as the in-process SKU cache holds them
// (skucache.go: at most skuCacheTTL old; an admin change made through any
// ingress reaches it at once) and the flat shipping fee, and shows the
// default address, read from PostgreSQL while the SKUs and the cart are.
// It writes nothing: unlike the design, a direct purchase does not go into
// the cart. A preview is a quote, not a promise: the partition decides the
// order against the committed stock.
func (s *Server) preview(w http.ResponseWriter, r *http.Request) error {
	var req previewRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	ctx, user := r.Context(), principal(r.Context()).UserID
	var (
		addr    *order.Address
		addrErr error
		wg      sync.WaitGroup
	)
	wg.Go(func() { addr, addrErr = s.Addresses.DefaultAddress(ctx, user) })
	q, err := s.quote(ctx, user, &req)
	wg.Wait()
	if err != nil {
		return err
	}
	if addrErr != nil {
		return addrErr
	}
	resp := previewResponse{Quote: q}
	if addr != nil {
		resp.Address = &addressView{Address: *addr, Default: true}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// quote prices a preview's lines.
func (s *Server) quote(ctx context.Context, user string, req *previewRequest) (*order.Quote, error) {
	skus, err := s.skus.get(ctx, req.skuIDs())
	if err != nil {
		return nil, err
	}
	if req.Items != nil {
		return order.QuoteLines(req.Items, skus, s.cfg.ShippingFee, "items")
	}
	cart, err := s.Carts.Cart(ctx, user)
	if err != nil {
		return nil, err
	}
	return order.QuoteCart(req.CartSKUIDs, cart, skus, s.cfg.ShippingFee, "cart_sku_ids")
}
