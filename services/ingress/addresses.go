package ingress

import (
	"net/http"

	"github.com/flashsale/orderd/pkg/order"
)

// addressView is an address as the API shows it: Default marks the user's
// newest address, the one checkout uses unless told otherwise.
type addressView struct {
	order.Address
	Default bool `json:"default"`
}

// addressList is the body of GET /v1/addresses.
type addressList struct {
	Items []addressView `json:"items"`
}

// createAddress is POST /v1/addresses: 201 with the address, which is the
// newest and so the default.
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

// listAddresses is GET /v1/addresses: the caller's addresses, newest (the
// default) first.
func (s *Server) listAddresses(w http.ResponseWriter, r *http.Request) error {
	as, err := s.Addresses.Addresses(r.Context(), principal(r.Context()).UserID)
	if err != nil {
		return err
	}
	list := addressList{Items: make([]addressView, len(as))}
	for i, a := range as {
		list.Items[i] = addressView{Address: a, Default: i == 0}
	}
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
