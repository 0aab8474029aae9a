package order

import "github.com/google/uuid"

// StockCount is what the database says of one SKU's stock: its counter
// (stock, initial, restocked) and the quantities orders and reservations
// hold.
type StockCount struct {
	SKUID        uuid.UUID `db:"sku_id"`
	Name         string    `db:"name"`
	Stock        int64     `db:"stock"`
	Initial      int64     `db:"initial_stock"`
	Restocked    int64     `db:"restocked"`
	HeldByOrders int64     `db:"held_by_orders"` // lines of confirmed and paid orders
	// Reserved is taken from the counter by a partition but held by no
	// confirmed or paid order yet: a multi-partition order being decided
	// (reservation held), or one rejected or cancelled whose release
	// command is on its way to the partition.
	Reserved int64 `db:"reserved"`
}

// Reconciliation compares, for one SKU, what the stock counter says was
// taken (initial + restocked - stock) with what the orders hold (plus what
// undecided multi-partition orders reserve) and with the count of the
// order events (confirmed minus released by cancelled and expired events).
type Reconciliation struct {
	SKUID          uuid.UUID `json:"sku_id"`
	Name           string    `json:"name"`
	Stock          int64     `json:"stock"`
	Initial        int64     `json:"initial"`
	Restocked      int64     `json:"restocked"`
	TakenByCounter int64     `json:"taken_by_counter"`
	HeldByOrders   int64     `json:"held_by_orders"`
	Reserved       int64     `json:"reserved"`
	// HeldByEvents is nil when the events were not counted.
	HeldByEvents *int64 `json:"held_by_events"`
	// Drift is TakenByCounter - HeldByOrders - Reserved: units the counter
	// lost (negative: oversold) that no order accounts for.
	Drift int64 `json:"drift"`
	// EventsDrift is HeldByEvents - HeldByOrders (nil without events):
	// decisions the stream and the database disagree on. Events still in
	// the outbox show here for a moment.
	EventsDrift *int64 `json:"events_drift"`
	OK          bool   `json:"ok"`
}

// Reconcile compares counts with the quantities the events hold per SKU
// (nil: not counted).
func Reconcile(counts []StockCount, events map[uuid.UUID]int64) []Reconciliation {
	out := make([]Reconciliation, 0, len(counts))
	for _, c := range counts {
		r := Reconciliation{
			SKUID: c.SKUID, Name: c.Name, Stock: c.Stock, Initial: c.Initial, Restocked: c.Restocked,
			TakenByCounter: c.Initial + c.Restocked - c.Stock, HeldByOrders: c.HeldByOrders, Reserved: c.Reserved,
		}
		r.Drift = r.TakenByCounter - r.HeldByOrders - r.Reserved
		r.OK = r.Drift == 0
		if events != nil {
			held := events[c.SKUID]
			d := held - r.HeldByOrders
			r.HeldByEvents, r.EventsDrift = &held, &d
			r.OK = r.OK && d == 0
		}
		out = append(out, r)
	}
	return out
}
