package ingress

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/flashsale/orderd/pkg/order"
)

// addressView is an address as the API shows it: Default marks the user's
// newest address, the one checkout uses unless told otherwise.
type addressView struct {
	order.Address
	Default bool `json:"default"`
}

// addressList is the body of GET /v1/addresses: a page of addresses and
// the cursor of the next page, null on the last.
type addressList struct {
	Items      []addressView `json:"items"`
	NextCursor *string       `json:"next_cursor"`
}

// Address list page sizes: the default page holds every address a user
// may keep (postgres.MaxAddresses), so that a client that ignores the
// cursor still sees them all.
const (
	defaultAddressPage = 50
	maxAddressPage     = 100
)

// createAddress is POST /v1/addresses: 201 with the address, which is the
// newest and so the default; 409 when the user already keeps the most
// addresses allowed (50).
func (s *Server) createAddress(w http.ResponseWriter, r *http.Request) error {
	var n order.NewAddress
	if err := decodeJSON(w, r, &n); err != nil {
		return err
	}
	a, err := s.Addresses.CreateAddress(r.Context(), principal(r.Context()).UserID, &n)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/addresses/"+a.ID.String())
	writeJSON(w, http.StatusCreated, addressView{Address: *a, Default: true})
	return nil
}

// listAddresses is GET /v1/addresses?limit=&cursor=: the caller's
// addresses, newest (the default) first, a page at a time (keyset
// pagination; the cursor is opaque), as GET /v1/orders.
func (s *Server) listAddresses(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := defaultAddressPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAddressPage {
			return order.Invalid("invalid query parameters", order.FieldError{Field: "limit",
				Detail: fmt.Sprintf("must be an integer from 1 to %d", maxAddressPage)})
		}
		limit = n
	}
	cursor := q.Get("cursor")
	as, next, err := s.Addresses.AddressPage(r.Context(), principal(r.Context()).UserID, cursor, limit)
	if err != nil {
		return err
	}
	list := addressList{Items: make([]addressView, len(as))}
	for i, a := range as {
		list.Items[i] = addressView{Address: a, Default: cursor == "" && i == 0}
	}
	if next != "" {
		list.NextCursor = &next
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, list)
	return nil
}

// getAddress is GET /v1/addresses/{id}: one of the caller's addresses;
// another user's is 404.
func (s *Server) getAddress(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	user := principal(r.Context()).UserID
	a, err := s.Addresses.Address(r.Context(), user, id)
	if err != nil {
		return err
	}
	def, err := s.Addresses.DefaultAddress(r.Context(), user)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, addressView{Address: *a, Default: def != nil && def.ID == a.ID})
	return nil
}

// deleteAddress is DELETE /v1/addresses/{id}: 204; another user's address,
// or one already deleted, is 404.
func (s *Server) deleteAddress(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	if err := s.Addresses.DeleteAddress(r.Context(), principal(r.Context()).UserID, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
