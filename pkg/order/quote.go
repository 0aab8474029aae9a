package order

import (
	"fmt"

	"github.com/google/uuid"
)

// Quote is an order's price before it is placed: the design's preview.
type Quote struct {
	Items       []Line `json:"items"`
	ItemCount   int64  `json:"item_count"`
	Subtotal    int64  `json:"subtotal"`
	ShippingFee int64  `json:"shipping_fee"`
	GrandTotal  int64  `json:"grand_total"`
	Currency    string `json:"currency"`
}

// QuoteLines prices lines against the SKUs they name. field names the
// request field each line came from ("items" or "cart_sku_ids") for error
// messages. A SKU missing from skus, a quantity over its stock, or SKUs in
// different currencies are EINVALID errors naming the line. Lines must have
// positive quantities (validate them first).
func QuoteLines(lines []LineRequest, skus map[uuid.UUID]*SKU, shippingFee int64, field string) (*Quote, error) {
	return quote(lines, skus, shippingFee, func(i int) string { return fmt.Sprintf("%s[%d]", field, i) })
}

// QuoteCart prices a cart checkout as the design's cart preview does: ids
// are the selected SKUs (validate them first with ValidateSKUIDs), cart the
// user's cart. Every id must name a SKU in skus, even one the cart does not
// hold; ids the cart holds with quantity 0, or not at all, are skipped
// (CartLines). It returns an EINVALID error naming the ids by their index in
// field when a SKU does not exist, a cart quantity is over MaxLineQty or the
// stock, the SKUs are in different currencies, or no selected SKU is in the
// cart.
func QuoteCart(ids []uuid.UUID, cart map[uuid.UUID]int64, skus map[uuid.UUID]*SKU, shippingFee int64, field string) (*Quote, error) {
	var f Fields
	index := make([]int, 0, len(ids)) // line number -> index in ids
	for i, id := range ids {
		name := fmt.Sprintf("%s[%d]", field, i)
		switch q := cart[id]; {
		case skus[id] == nil:
			f.Add(name, "SKU %s does not exist", id)
		case q > MaxLineQty:
			f.Add(name, "your cart holds %d of SKU %s, more than the %d one order line may hold", q, id, MaxLineQty)
		case q > 0:
			index = append(index, i)
		}
	}
	if err := f.Err("the order cannot be priced"); err != nil {
		return nil, err
	}
	lines := CartLines(ids, cart)
	if len(lines) == 0 {
		return nil, Invalid("the order cannot be priced", FieldError{Field: field, Detail: "none of these SKUs is in your cart"})
	}
	return quote(lines, skus, shippingFee, func(i int) string { return fmt.Sprintf("%s[%d]", field, index[i]) })
}

// quote prices lines; name returns the field path of line i for errors.
func quote(lines []LineRequest, skus map[uuid.UUID]*SKU, shippingFee int64, name func(i int) string) (*Quote, error) {
	q := &Quote{Items: make([]Line, 0, len(lines)), ShippingFee: shippingFee}
	var f Fields
	for i, l := range lines {
		s, ok := skus[l.SKUID]
		if !ok {
			f.Add(name(i), "SKU %s does not exist", l.SKUID)
			continue
		}
		if l.Quantity > s.Stock {
			f.Add(name(i)+".quantity", "%d exceeds the %d left of SKU %s", l.Quantity, s.Stock, l.SKUID)
			continue
		}
		if q.Currency == "" {
			q.Currency = s.Currency
		} else if q.Currency != s.Currency {
			f.Add(name(i), "SKU %s is sold in %s, the order in %s: one currency per order", l.SKUID, s.Currency, q.Currency)
			continue
		}
		line := Line{SKUID: s.ID, Name: s.Name, Quantity: l.Quantity, UnitPrice: s.Price, LineTotal: s.Price * l.Quantity}
		q.Items = append(q.Items, line)
		q.ItemCount += l.Quantity
		q.Subtotal += line.LineTotal
	}
	if err := f.Err("the order cannot be priced"); err != nil {
		return nil, err
	}
	q.GrandTotal = q.Subtotal + q.ShippingFee
	return q, nil
}

// ValidateLines checks requested lines: 1 to MaxLines of them, each with a
// SKU id, a quantity from 1 to MaxLineQty, and no SKU twice.
func ValidateLines(lines []LineRequest, field string) error {
	var f Fields
	switch {
	case len(lines) == 0:
		f.Add(field, "must name at least one SKU")
	case len(lines) > MaxLines:
		f.Add(field, "may hold at most %d lines", MaxLines)
	}
	seen := make(map[uuid.UUID]bool, len(lines))
	for i, l := range lines {
		switch {
		case l.SKUID == uuid.Nil:
			f.Add(fmt.Sprintf("%s[%d].sku_id", field, i), "is required")
		case seen[l.SKUID]:
			f.Add(fmt.Sprintf("%s[%d].sku_id", field, i), "SKU %s appears twice", l.SKUID)
		}
		seen[l.SKUID] = true
		if l.Quantity < 1 || l.Quantity > MaxLineQty {
			f.Add(fmt.Sprintf("%s[%d].quantity", field, i), "must be an integer from 1 to %d", MaxLineQty)
		}
	}
	return f.Err("invalid order lines")
}

// ValidateSKUIDs checks a list of cart SKU ids: 1 to MaxLines distinct ids.
func ValidateSKUIDs(ids []uuid.UUID, field string) error {
	var f Fields
	switch {
	case len(ids) == 0:
		f.Add(field, "must name at least one SKU")
	case len(ids) > MaxLines:
		f.Add(field, "may hold at most %d SKUs", MaxLines)
	}
	seen := make(map[uuid.UUID]bool, len(ids))
	for i, id := range ids {
		switch {
		case id == uuid.Nil:
			f.Add(fmt.Sprintf("%s[%d]", field, i), "is not a SKU id")
		case seen[id]:
			f.Add(fmt.Sprintf("%s[%d]", field, i), "SKU %s appears twice", id)
		}
		seen[id] = true
	}
	return f.Err("invalid SKU ids")
}

// CartLines turns the selected cart SKUs into lines with the cart's
// quantities, skipping SKUs the cart does not hold or holds with quantity 0,
// as the design's preview does.
func CartLines(ids []uuid.UUID, cart map[uuid.UUID]int64) []LineRequest {
	lines := make([]LineRequest, 0, len(ids))
	for _, id := range ids {
		if q := cart[id]; q > 0 {
			lines = append(lines, LineRequest{SKUID: id, Quantity: q})
		}
	}
	return lines
}
