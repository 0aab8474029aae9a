package ingress

import (
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// SKU listing page sizes.
const (
	defaultSKUPage = 50
	maxSKUPage     = 200
)

// skuPage is one page of GET /v1/skus. NextAfter is the value of ?after=
// for the next page, or null on the last one.
type skuPage struct {
	Items     []order.SKU `json:"items"`
	NextAfter *uuid.UUID  `json:"next_after"`
}

// createSKU is POST /v1/skus (admin): 201 with the SKU and its Location.
func (s *Server) createSKU(w http.ResponseWriter, r *http.Request) error {
	var n order.NewSKU
	if err := decodeJSON(w, r, &n); err != nil {
		return err
	}
	sku, err := s.SKUs.CreateSKU(r.Context(), &n)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/skus/"+sku.ID.String())
	writeJSON(w, http.StatusCreated, sku)
	return nil
}

// getSKU is GET /v1/skus/{id}.
func (s *Server) getSKU(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	sku, err := s.SKUs.SKU(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sku)
	return nil
}

// listSKUs is GET /v1/skus?after=&limit=: SKUs ordered by id, a page at a
// time (keyset pagination).
func (s *Server) listSKUs(w http.ResponseWriter, r *http.Request) error {
	after, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	// One more than asked tells whether another page follows.
	skus, err := s.SKUs.ListSKUs(r.Context(), after, limit+1)
	if err != nil {
		return err
	}
	page := skuPage{Items: skus}
	if len(skus) > limit {
		page.Items = skus[:limit]
		next := skus[limit-1].ID
		page.NextAfter = &next
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// pageParams reads ?after= (a SKU id, default none) and ?limit= (1 to
// maxSKUPage, default defaultSKUPage).
func pageParams(r *http.Request) (uuid.UUID, int, error) {
	q := r.URL.Query()
	var f order.Fields
	after := uuid.Nil
	if v := q.Get("after"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil || len(v) != 36 {
			f.Add("after", "must be a SKU id (the next_after of the previous page)")
		}
		after = id
	}
	limit := defaultSKUPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSKUPage {
			f.Add("limit", "must be an integer from 1 to %d", maxSKUPage)
		}
		limit = n
	}
	if err := f.Err("invalid query parameters"); err != nil {
		return uuid.Nil, 0, err
	}
	return after, limit, nil
}
