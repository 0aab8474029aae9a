package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"mime"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// SKUAdminStore changes SKUs on an admin's behalf, each change audited
// (pkg/postgres).
type SKUAdminStore interface {
	// SetSKUPaused pauses or resumes a SKU's sale and returns the SKU;
	// idempotent. Errors: ENOTFOUND, EUNAVAILABLE.
	SetSKUPaused(ctx context.Context, id uuid.UUID, paused bool, actor string) (*order.SKU, error)
	// UpdateSKU applies edit to the SKU, validates the result as a whole
	// and stores it with an audit entry. Errors: ENOTFOUND, EINVALID,
	// EUNAVAILABLE.
	UpdateSKU(ctx context.Context, id uuid.UUID, actor string, edit func(*order.SKU) error) (*order.SKU, error)
	// SKUAudit lists a SKU's audit entries, newest first. Errors:
	// ENOTFOUND, EUNAVAILABLE.
	SKUAudit(ctx context.Context, id uuid.UUID) ([]order.AuditEntry, error)
}

// auditList is the answer of GET /v1/skus/{id}/audit.
type auditList struct {
	Items []order.AuditEntry `json:"items"`
}

// adminSKURoutes registers the admin's operations on a running sale (SPEC
// 3.4): the kill switch, edits, and their audit.
func (s *Server) adminSKURoutes() {
	s.handle("POST /v1/skus/{id}/pause", s.adminWriter(s.pauseSKU(true)))
	s.handle("POST /v1/skus/{id}/resume", s.adminWriter(s.pauseSKU(false)))
	s.handle("PATCH /v1/skus/{id}", s.adminWriter(s.patchSKU))
	s.handle("GET /v1/skus/{id}/audit", s.admin(s.skuAudit))
}

// skuAdmin returns the store of admin changes, or EUNAVAILABLE without one.
func (s *Server) skuAdmin() (SKUAdminStore, error) {
	if s.SKUAdmin == nil {
		return nil, order.Errorf(order.EUNAVAILABLE, "SKU administration is not configured")
	}
	return s.SKUAdmin, nil
}

// pauseSKU is POST /v1/skus/{id}/pause (paused true) and .../resume: 200
// with the SKU. Idempotent. While a SKU is paused this process refuses its
// checkouts at once (409 sale-paused), other ingress processes as soon as
// the SKU note reaches them (within the SKU cache's TTL if it is lost), and
// its partition rejects the commands already queued (sale_paused).
func (s *Server) pauseSKU(paused bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathUUID(r, "id")
		if err != nil {
			return err
		}
		st, err := s.skuAdmin()
		if err != nil {
			return err
		}
		sku, err := st.SetSKUPaused(r.Context(), id, paused, principal(r.Context()).UserID)
		if err != nil {
			return err
		}
		s.skus.put(sku)
		s.noteSKU(r.Context(), sku.ID)
		writeJSON(w, http.StatusOK, sku)
		return nil
	}
}

// skuPatchFields are the fields a PATCH may change; optional ones may be
// cleared with null.
var skuPatchFields = map[string]bool{
	"name": false, "price": false,
	"sale_starts_at": true, "sale_ends_at": true, "per_user_limit": true, "payment_hold_seconds": true,
}

// skuFixedFields are SKU fields a PATCH may name but not change.
var skuFixedFields = map[string]string{
	"stock":    "cannot be changed: stock moves only by restock and orders",
	"currency": "cannot be changed: orders are priced in it",
}

// skuPatch is a decoded JSON merge patch (RFC 7396) of a SKU.
type skuPatch map[string]json.RawMessage

// decodeSKUPatch reads a merge patch: a JSON object of at most
// MaxBodyBytes whose members are SKU fields. An unknown member is
// EMALFORMED (400); stock or currency, or a value of the wrong type or a
// null for a required field, is EINVALID (422) naming the fields.
func decodeSKUPatch(w http.ResponseWriter, r *http.Request) (skuPatch, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/merge-patch+json" && mt != "application/json") {
			return nil, order.Errorf(order.EUNSUPPORTED, "send the body as application/merge-patch+json")
		}
	}
	var p skuPatch
	if err := decodeJSON(w, r, &p); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, order.Errorf(order.EMALFORMED, "the body must be a JSON object")
	}
	keys := slices.Sorted(maps.Keys(p))
	for _, k := range keys {
		if _, ok := skuPatchFields[k]; !ok && skuFixedFields[k] == "" {
			return nil, order.Errorf(order.EMALFORMED, "unknown field %q", truncate(k, 64))
		}
	}
	var f order.Fields
	for _, k := range keys {
		if why := skuFixedFields[k]; why != "" {
			f.Add(k, "%s", why)
		}
	}
	if err := f.Err("these SKU fields cannot be changed"); err != nil {
		return nil, err
	}
	return p, nil
}

// apply sets the fields the patch names on sku: null clears an optional
// one. It returns an EINVALID error naming every value that is not of the
// field's type, or null for a required field.
func (p skuPatch) apply(sku *order.SKU) error {
	var f order.Fields
	for _, k := range slices.Sorted(maps.Keys(p)) {
		raw := bytes.TrimSpace(p[k])
		null := bytes.Equal(raw, []byte("null"))
		if null && !skuPatchFields[k] {
			f.Add(k, "cannot be null")
			continue
		}
		var err error
		switch k {
		case "name":
			err = json.Unmarshal(raw, &sku.Name)
		case "price":
			err = json.Unmarshal(raw, &sku.Price)
		case "sale_starts_at":
			sku.SaleStartsAt, err = nullable[time.Time](raw, null)
		case "sale_ends_at":
			sku.SaleEndsAt, err = nullable[time.Time](raw, null)
		case "per_user_limit":
			sku.PerUserLimit, err = nullable[int64](raw, null)
		case "payment_hold_seconds":
			sku.PaymentHoldSeconds, err = nullable[int64](raw, null)
		}
		if err != nil {
			f.Add(k, "%s", patchTypeError(k))
		}
	}
	return f.Err("invalid SKU patch")
}

// nullable decodes raw into a new T, or nil if null.
func nullable[T any](raw []byte, null bool) (*T, error) {
	if null {
		return nil, nil
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, err
	}
	return v, nil
}

func patchTypeError(field string) string {
	switch field {
	case "name":
		return "must be a string"
	case "sale_starts_at", "sale_ends_at":
		return "must be an RFC 3339 date-time or null"
	case "price":
		return "must be an integer"
	}
	return "must be an integer or null"
}

// patchSKU is PATCH /v1/skus/{id} (admin): a JSON merge patch of name,
// price, sale_starts_at, sale_ends_at, per_user_limit and
// payment_hold_seconds, validated as a whole after it is applied (422 with
// the fields at fault), stored with an audit entry of who changed what.
// stock and currency are refused (422), other members are unknown (400).
// 200 with the SKU. Orders accepted before a price change keep their price:
// the checkout quotes it into the command.
func (s *Server) patchSKU(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	st, err := s.skuAdmin()
	if err != nil {
		return err
	}
	patch, err := decodeSKUPatch(w, r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var sku *order.SKU
	if len(patch) == 0 {
		sku, err = s.SKUs.SKU(ctx, id) // nothing to change, nothing to audit
	} else {
		sku, err = st.UpdateSKU(ctx, id, principal(ctx).UserID, patch.apply)
	}
	if err != nil {
		return err
	}
	s.skus.put(sku)
	if len(patch) > 0 {
		s.noteSKU(ctx, sku.ID)
	}
	writeJSON(w, http.StatusOK, sku)
	return nil
}

// skuAudit is GET /v1/skus/{id}/audit (admin): the SKU's admin changes,
// newest first.
func (s *Server) skuAudit(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	st, err := s.skuAdmin()
	if err != nil {
		return err
	}
	entries, err := st.SKUAudit(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, auditList{Items: entries})
	return nil
}
