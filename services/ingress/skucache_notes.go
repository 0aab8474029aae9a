package ingress

import (
	"context"

	"github.com/google/uuid"
)

// SKUNotifier tells every ingress process that a SKU changed, so that
// each drops what its SKU cache holds of it (pkg/natsbus SKUNotes).
type SKUNotifier interface {
	// SKUChanged sends the note; an error means it was not sent.
	SKUChanged(id uuid.UUID) error
}

// noteSKU sends the SKU note of an admin change that has committed (pause,
// resume, PATCH). A note that cannot be sent is logged: the other
// processes then see the change within the SKU cache's TTL. A restock sends
// none: what it changes, the stock, is not what the checkout reads from the
// cache (the partition decides against the stock in PostgreSQL).
func (s *Server) noteSKU(ctx context.Context, id uuid.UUID) {
	if s.SKUNotes == nil {
		return
	}
	if err := s.SKUNotes.SKUChanged(id); err != nil {
		s.log.WarnContext(ctx, "sku note not sent; other ingress processes see the change within the cache TTL",
			"sku", id, "err", err)
	}
}

// SKUChanged drops what the server's SKU cache holds of SKU id, so that
// its next checkout reads it again. The wiring subscribes it to the SKU
// notes (natsbus.SKUNotes.Subscribe); it does not block.
func (s *Server) SKUChanged(id uuid.UUID) { s.skus.forget(id) }
