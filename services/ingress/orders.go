package ingress

import (
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// orderRoutes registers the checkout and order status routes, and the
// admin's restock (a command like checkout).
func (s *Server) orderRoutes() {
	s.handle("POST /v1/orders", s.checkoutLimits(s.checkout))
	s.handle("GET /v1/orders", s.user(s.listOrders))
	s.handle("GET /v1/orders/{id}", s.user(s.getOrder))
	s.handle("GET /v1/orders/{id}/events", s.user(s.orderEvents))
	s.handle("POST /v1/orders/{id}/cancel", s.writer(s.cancelOrder))
	s.handle("POST /v1/skus/{id}/restock", s.adminWriter(s.restock))
}

// cancelOrder is POST /v1/orders/{id}/cancel: the caller cancels a pending
// or confirmed (unpaid) order. The cancel command goes to the order's home
// partition, which releases the stock through the SKUs' partitions; the
// answer is 202 with the order as it is now (the change arrives as an
// order.cancelled event, or as a rejection if the order was decided
// first). A final order is 409. The command id is derived from the order,
// so cancelling twice is one cancellation.
func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	ctx, user := r.Context(), principal(r.Context()).UserID
	o, err := s.ownedOrder(ctx, user, id)
	if err != nil {
		return err
	}
	if o.Status.Final() {
		return order.Errorf(order.ECONFLICT, "order %s is %s: only a pending or unpaid order can be cancelled", id, o.Status)
	}
	if len(o.Lines) == 0 {
		return order.Errorf(order.EINTERNAL, "order %s has no lines", id)
	}
	lines := make([]order.LineRequest, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = order.LineRequest{SKUID: l.SKUID, Quantity: l.Quantity}
	}
	cmd := order.Command{
		ID:        uuid.NewSHA1(id, []byte("cancel")),
		Kind:      order.KindCancel,
		Partition: order.HomePartition(lines, s.cfg.Partitions),
		At:        time.Now().UTC(),
		Cancel:    &order.Cancel{OrderID: id, UserID: user},
	}
	if err := s.publish(ctx, cmd); err != nil {
		return err
	}
	writeOrder(w, http.StatusAccepted, o)
	return nil
}

// restockRequest is the body of POST /v1/skus/{id}/restock.
type restockRequest struct {
	Quantity *int64 `json:"quantity"`
}

// restockAccepted is the answer of a restock: the queued command.
type restockAccepted struct {
	CommandID uuid.UUID `json:"command_id"`
	SKUID     uuid.UUID `json:"sku_id"`
	Quantity  int64     `json:"quantity"`
	Status    string    `json:"status"`
}

// restock is POST /v1/skus/{id}/restock (admin): {quantity} from 1 to
// order.MaxStock units are added to the SKU's stock by its partition, like
// every stock change; 202 once the command is on JetStream. An unknown SKU
// is 404. With an Idempotency-Key the command id is derived from the SKU and
// the key, so a retried restock adds the stock once.
func (s *Server) restock(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	var req restockRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Quantity == nil || *req.Quantity < 1 || *req.Quantity > order.MaxStock {
		return order.Invalid("invalid restock", order.FieldError{Field: "quantity", Detail: fmt.Sprintf("must be an integer from 1 to %d", order.MaxStock)})
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if _, err := s.SKUs.SKU(ctx, id); err != nil {
		return err
	}
	cmdID := uuid.New()
	if key != "" {
		cmdID = uuid.NewSHA1(id, []byte("restock\x00"+key))
	}
	cmd := order.Command{
		ID:        cmdID,
		Kind:      order.KindRestock,
		Partition: order.Partition(id, s.cfg.Partitions),
		At:        time.Now().UTC(),
		Restock:   &order.Restock{SKUID: id, Quantity: *req.Quantity},
	}
	if err := s.publish(ctx, cmd); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusAccepted, restockAccepted{CommandID: cmdID, SKUID: id, Quantity: *req.Quantity, Status: "queued"})
	return nil
}
