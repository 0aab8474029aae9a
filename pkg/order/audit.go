package order

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// SKU audit actions.
const (
	AuditUpdate = "update" // PATCH /v1/skus/{id}
	AuditPause  = "pause"
	AuditResume = "resume"
)

// AuditEntry is one admin change of a SKU: who (the admin's token
// subject), when, and the SKU before and after.
type AuditEntry struct {
	ID     int64           `json:"id" db:"id"`
	SKUID  uuid.UUID       `json:"sku_id" db:"sku_id"`
	Action string          `json:"action" db:"action"`
	Actor  string          `json:"actor" db:"actor"`
	At     time.Time       `json:"at" db:"at"`
	Before json.RawMessage `json:"before" db:"before"`
	After  json.RawMessage `json:"after" db:"after"`
}
