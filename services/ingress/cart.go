package ingress

import (
	"net/http"
	"slices"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// cartView is the body of GET /v1/cart and PUT /v1/cart/items/{sku_id}.
type cartView struct {
	Items []cartItem `json:"items"`
}

// cartItem is one SKU in a cart.
type cartItem struct {
	SKUID    uuid.UUID `json:"sku_id"`
	Quantity int64     `json:"quantity"`
}

// cartQuantity is the body of PUT /v1/cart/items/{sku_id}.
type cartQuantity struct {
	Quantity *int64 `json:"quantity"`
}

// getCart is GET /v1/cart: the caller's cart, sorted by SKU id.
func (s *Server) getCart(w http.ResponseWriter, r *http.Request) error {
	return s.writeCart(w, r, http.StatusOK)
}

// putCartItem is PUT /v1/cart/items/{sku_id} {quantity}: sets the quantity
// of an existing SKU, from 1 to its per-user limit (order.MaxLineQty if it
// has none), and answers 200 with the cart.
func (s *Server) putCartItem(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "sku_id")
	if err != nil {
		return err
	}
	var body cartQuantity
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	sku, err := s.SKUs.SKU(r.Context(), id)
	if err != nil && order.ErrorCode(err) != order.ENOTFOUND {
		return err
	}
	var f order.Fields
	if sku == nil {
		f.Add("sku_id", "SKU %s does not exist", id)
	}
	switch limit := cartLimit(sku); {
	case body.Quantity == nil:
		f.Add("quantity", "is required")
	case *body.Quantity < 1 || *body.Quantity > limit:
		f.Add("quantity", "must be an integer from 1 to %d for this SKU", limit)
	}
	if err := f.Err("invalid cart item"); err != nil {
		return err
	}
	if err := s.Carts.SetCartItem(r.Context(), principal(r.Context()).UserID, id, *body.Quantity); err != nil {
		return err
	}
	return s.writeCart(w, r, http.StatusOK)
}

// cartLimit is the most units of sku a cart may hold: its per-user limit,
// or order.MaxLineQty if it has none (or is nil).
func cartLimit(sku *order.SKU) int64 {
	if sku != nil && sku.PerUserLimit != nil {
		return *sku.PerUserLimit
	}
	return order.MaxLineQty
}

// deleteCartItem is DELETE /v1/cart/items/{sku_id}: 204, whether or not
// the cart held the SKU.
func (s *Server) deleteCartItem(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "sku_id")
	if err != nil {
		return err
	}
	if err := s.Carts.RemoveCartItem(r.Context(), principal(r.Context()).UserID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// clearCart is DELETE /v1/cart: 204.
func (s *Server) clearCart(w http.ResponseWriter, r *http.Request) error {
	if err := s.Carts.ClearCart(r.Context(), principal(r.Context()).UserID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// writeCart answers the caller's cart: the SKUs it holds with a positive
// quantity, sorted by id.
func (s *Server) writeCart(w http.ResponseWriter, r *http.Request, status int) error {
	cart, err := s.Carts.Cart(r.Context(), principal(r.Context()).UserID)
	if err != nil {
		return err
	}
	v := cartView{Items: make([]cartItem, 0, len(cart))}
	for id, q := range cart {
		if q > 0 {
			v.Items = append(v.Items, cartItem{SKUID: id, Quantity: q})
		}
	}
	slices.SortFunc(v.Items, func(a, b cartItem) int { return slices.Compare(a.SKUID[:], b.SKUID[:]) })
	writeJSON(w, status, v)
	return nil
}
