package order

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// SKU is a product variant on sale. Money is in the currency's minor unit.
type SKU struct {
	ID                 uuid.UUID  `json:"id" db:"id"`
	Name               string     `json:"name" db:"name"`
	Price              int64      `json:"price" db:"price"`
	Currency           string     `json:"currency" db:"currency"`
	Stock              int64      `json:"stock" db:"stock"`
	InitialStock       int64      `json:"initial_stock" db:"initial_stock"`
	Restocked          int64      `json:"restocked" db:"restocked"`
	UnitsSold          int64      `json:"units_sold" db:"units_sold"`
	PerUserLimit       *int64     `json:"per_user_limit" db:"per_user_limit"`
	SaleStartsAt       *time.Time `json:"sale_starts_at" db:"sale_starts_at"`
	SaleEndsAt         *time.Time `json:"sale_ends_at" db:"sale_ends_at"`
	PaymentHoldSeconds *int64     `json:"payment_hold_seconds" db:"payment_hold_seconds"`
	Paused             bool       `json:"paused" db:"paused"`
	CreatedAt          time.Time  `json:"created_at" db:"created_at"`
	UpdatedAt          time.Time  `json:"updated_at" db:"updated_at"`
}

// Limits on what a SKU may hold.
const (
	MaxNameLen   = 200
	MaxPrice     = 1_000_000_000_00 // one billion major units
	MaxStock     = 1_000_000_000
	MaxLineQty   = 10_000 // the most units of one SKU in one order line
	MaxLines     = 50     // the most lines in one order
	MaxHoldSecs  = 7 * 24 * 3600
	MaxUserLimit = MaxLineQty
)

// SaleState says whether a SKU can be bought at t, or why not.
func (s *SKU) SaleState(t time.Time) RejectReason {
	switch {
	case s.Paused:
		return RejectSalePaused
	case s.SaleStartsAt != nil && t.Before(*s.SaleStartsAt):
		return RejectSaleNotOpen
	case s.SaleEndsAt != nil && !t.Before(*s.SaleEndsAt):
		return RejectSaleNotOpen
	}
	return ""
}

// NewSKU is the admin's request to create a SKU.
type NewSKU struct {
	Name               string     `json:"name"`
	Price              *int64     `json:"price"`
	Currency           string     `json:"currency"`
	Stock              *int64     `json:"stock"`
	PerUserLimit       *int64     `json:"per_user_limit"`
	SaleStartsAt       *time.Time `json:"sale_starts_at"`
	SaleEndsAt         *time.Time `json:"sale_ends_at"`
	PaymentHoldSeconds *int64     `json:"payment_hold_seconds"`
}

// Validate checks every field and returns an EINVALID error naming all that
// are wrong.
func (n *NewSKU) Validate() error {
	var f Fields
	switch {
	case strings.TrimSpace(n.Name) == "":
		f.Add("name", "is required")
	case len(n.Name) > MaxNameLen:
		f.Add("name", "is longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(n.Name) || strings.ContainsFunc(n.Name, isControl):
		f.Add("name", "contains invalid characters")
	}
	switch {
	case n.Price == nil:
		f.Add("price", "is required")
	case *n.Price < 0 || *n.Price > MaxPrice:
		f.Add("price", "must be between 0 and %d minor units", int64(MaxPrice))
	}
	if !ValidCurrency(n.Currency) {
		f.Add("currency", "must be an ISO 4217 code of three upper-case letters")
	}
	switch {
	case n.Stock == nil:
		f.Add("stock", "is required")
	case *n.Stock < 0 || *n.Stock > MaxStock:
		f.Add("stock", "must be between 0 and %d", MaxStock)
	}
	if n.PerUserLimit != nil && (*n.PerUserLimit < 1 || *n.PerUserLimit > MaxUserLimit) {
		f.Add("per_user_limit", "must be between 1 and %d", MaxUserLimit)
	}
	for _, t := range []struct {
		field string
		at    *time.Time
	}{{"sale_starts_at", n.SaleStartsAt}, {"sale_ends_at", n.SaleEndsAt}} {
		if t.at != nil && !ValidTime(*t.at) {
			f.Add(t.field, "must be between years 1 and 9999 in UTC")
		}
	}
	if n.SaleStartsAt != nil && n.SaleEndsAt != nil && !n.SaleEndsAt.After(*n.SaleStartsAt) {
		f.Add("sale_ends_at", "must be after sale_starts_at")
	}
	if n.PaymentHoldSeconds != nil && (*n.PaymentHoldSeconds < 1 || *n.PaymentHoldSeconds > MaxHoldSecs) {
		f.Add("payment_hold_seconds", "must be between 1 and %d", MaxHoldSecs)
	}
	return f.Err("invalid SKU")
}

// ValidTime reports whether t, in UTC and at the microsecond precision of
// the database, is a year from 1 to 9999: one that RFC 3339 (and JSON) can
// write. An offset can push a time that parsed into year 10000.
func ValidTime(t time.Time) bool {
	y := t.UTC().Truncate(time.Microsecond).Year()
	return y >= 1 && y <= 9999
}

// ValidCurrency reports whether c looks like an ISO 4217 code.
func ValidCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}
