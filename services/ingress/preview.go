package ingress

import (
	"net/http"

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
// the prices and stock in the database and the flat shipping fee, and
// shows the default address. It writes nothing: unlike the design, a
// direct purchase does not go into the cart.
func (s *Server) preview(w http.ResponseWriter, r *http.Request) error {
	var req previewRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	ctx, user := r.Context(), principal(r.Context()).UserID
	skus, err := s.SKUs.SKUsByID(ctx, req.skuIDs())
	if err != nil {
		return err
	}
	var q *order.Quote
	if req.Items != nil {
		q, err = order.QuoteLines(req.Items, skus, s.cfg.ShippingFee, "items")
	} else {
		var cart map[uuid.UUID]int64
		if cart, err = s.Carts.Cart(ctx, user); err != nil {
			return err
		}
		q, err = order.QuoteCart(req.CartSKUIDs, cart, skus, s.cfg.ShippingFee, "cart_sku_ids")
	}
	if err != nil {
		return err
	}
	resp := previewResponse{Quote: q}
	addr, err := s.Addresses.DefaultAddress(ctx, user)
	if err != nil {
		return err
	}
	if addr != nil {
		resp.Address = &addressView{Address: *addr, Default: true}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
