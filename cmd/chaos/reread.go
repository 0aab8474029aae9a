package main

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
)

// rereadResult is what a fresh reader sees once the sale is over.
type rereadResult struct {
	Orders     int      `json:"orders"`
	StaleFirst int      `json:"stale_first_read"` // at the first read
	SettledMS  int64    `json:"settled_ms"`       // how long until every status agreed (re-reading the stale ones)
	Stale      int      `json:"stale"`            // still stale after rereadSettle
	Errors     int      `json:"errors"`           // the API did not answer
	Example    []string `json:"examples,omitempty"`
}

// rereadSettle is how long stale statuses are read again: a worker whose
// status cache update failed (Redis restarting) redelivers the batch with
// a growing delay (NakWithDelay, up to 30 s) and caches it then.
const rereadSettle = 90 * time.Second

// rereadStatuses reads every order of the scenarios' buyers through the
// API, as a buyer who opens the order page after the sale does, and
// compares the status with PostgreSQL's. The caller restarts the ingress
// first, so that no status it heard during the sale (its hub's memory)
// hides what the status cache holds: a cache that kept pending while the
// order was decided (a write lost in a Redis crash) shows here.
func rereadStatuses(ctx context.Context, db *sql.DB, api *apiClient, secret []byte) (rereadResult, error) {
	var r rereadResult
	rows, err := db.QueryContext(ctx, `SELECT id, user_id, status FROM orders WHERE user_id LIKE 'fb-%'`)
	if err != nil {
		return r, fmt.Errorf("read orders: %w", err)
	}
	var all []row
	for rows.Next() {
		var x row
		if err := rows.Scan(&x.id, &x.user, &x.status); err != nil {
			rows.Close()
			return r, err
		}
		all = append(all, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	r.Orders = len(all)
	start := time.Now()
	for pass := 0; ; pass++ {
		stale := readPass(ctx, api, secret, all, &r)
		if pass == 0 {
			r.StaleFirst = len(stale)
		}
		if len(stale) == 0 || time.Since(start) > rereadSettle || ctx.Err() != nil {
			r.Stale = len(stale)
			break
		}
		all = stale
		r.Example = nil
		sleep(ctx, 2*time.Second)
	}
	if r.Stale == 0 {
		r.SettledMS = time.Since(start).Milliseconds()
	}
	return r, nil
}

type row struct {
	id           uuid.UUID
	user, status string
}

// readPass reads the orders through the API once and returns the stale
// ones; unreadable ones count in r.Errors.
func readPass(ctx context.Context, api *apiClient, secret []byte, all []row, r *rereadResult) []row {
	var stale []row
	var mu sync.Mutex
	work := make(chan row)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for x := range work {
				tok, err := auth.Mint(secret, x.user, false, time.Hour)
				var st struct {
					Status string `json:"status"`
				}
				if err == nil {
					c, cancel := context.WithTimeout(ctx, 30*time.Second)
					err = api.retry(c, "GET", "/v1/orders/"+x.id.String(), tok, "", nil, &st)
					cancel()
				}
				mu.Lock()
				switch {
				case err != nil:
					r.Errors++
					if len(r.Example) < 5 {
						r.Example = append(r.Example, fmt.Sprintf("order %s: %v", x.id, err))
					}
				case st.Status != x.status:
					stale = append(stale, x)
					if len(r.Example) < 5 {
						r.Example = append(r.Example, fmt.Sprintf("order %s: the API says %s, PostgreSQL %s", x.id, st.Status, x.status))
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, x := range all {
		work <- x
	}
	close(work)
	wg.Wait()
	return stale
}

// repeatedDecisions counts the orders of the whole database (the
// scenarios' and the probe's) whose decision event was written more than
// once, and names one. A decision made twice with the same outcome writes
// the same event id, which the outbox, JetStream's dedupe and flashbench's
// stream check all drop as a copy; the outbox's count of writes per order
// (order_decisions) keeps it.
func repeatedDecisions(ctx context.Context, db *sql.DB) (int, string, error) {
	var n int
	var example sql.NullString
	err := db.QueryRowContext(ctx, `SELECT count(*), min(order_id::text) FROM order_decisions WHERE writes > 1`).Scan(&n, &example)
	if err != nil {
		return 0, "", fmt.Errorf("count repeated decisions: %w", err)
	}
	return n, example.String, nil
}
