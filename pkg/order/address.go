package order

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Address is a user's shipping address. The newest one is the default.
type Address struct {
	ID         uuid.UUID `json:"id" db:"id"`
	UserID     string    `json:"-" db:"user_id"`
	Recipient  string    `json:"recipient" db:"recipient"`
	Line1      string    `json:"line1" db:"line1"`
	Line2      *string   `json:"line2" db:"line2"`
	City       string    `json:"city" db:"city"`
	PostalCode string    `json:"postal_code" db:"postal_code"`
	Country    string    `json:"country" db:"country"`
	Phone      *string   `json:"phone" db:"phone"`
	CreatedAt  time.Time `json:"created_at" db:"created_at"`
}

// NewAddress is a user's request to add an address.
type NewAddress struct {
	Recipient  string  `json:"recipient"`
	Line1      string  `json:"line1"`
	Line2      *string `json:"line2"`
	City       string  `json:"city"`
	PostalCode string  `json:"postal_code"`
	Country    string  `json:"country"`
	Phone      *string `json:"phone"`
}

// Validate checks every field of the address.
func (a *NewAddress) Validate() error {
	var f Fields
	text := func(name, v string, required bool, max int) {
		switch {
		case required && strings.TrimSpace(v) == "":
			f.Add(name, "is required")
		case utf8.RuneCountInString(v) > max:
			f.Add(name, "is longer than %d characters", max)
		case !utf8.ValidString(v) || strings.ContainsFunc(v, isControl):
			f.Add(name, "contains invalid characters")
		}
	}
	text("recipient", a.Recipient, true, 200)
	text("line1", a.Line1, true, 200)
	if a.Line2 != nil {
		text("line2", *a.Line2, false, 200)
	}
	text("city", a.City, true, 100)
	text("postal_code", a.PostalCode, true, 20)
	if len(a.Country) != 2 || !isUpper(a.Country) {
		f.Add("country", "must be an ISO 3166-1 alpha-2 code such as DE or US")
	}
	if a.Phone != nil {
		text("phone", *a.Phone, false, 32)
	}
	return f.Err("invalid address")
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
