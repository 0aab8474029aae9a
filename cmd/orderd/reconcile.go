package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/services/ingress"
)

// RoleReconcile compares each SKU's stock counter with the orders and the
// order events, prints a table and fails on drift.
const RoleReconcile Role = "reconcile"

// errDrift is returned by orderd reconcile when a SKU drifts: exit 1.
var errDrift = errors.New("stock drift: the counters, the orders and the events disagree")

func init() {
	// reconcile reads PostgreSQL only: the relay keeps the events' count
	// there as it publishes them.
	for i := range options {
		switch options[i].flag {
		case "database-url", "log-level":
			options[i].roles = append(options[i].roles, RoleReconcile)
		}
	}
}

// newReconciler returns the reconciler of the admin API and of orderd
// reconcile: the database's stock counts, and the count of the order events
// relayed to ORDER_EVENTS, which the relay keeps in the database as it
// publishes them (postgres.DB.EventHoldings): one row per SKU, whatever the
// length of the event history.
func newReconciler(db *postgres.DB) ingress.Reconciler {
	return ingress.StockReconciler{Counts: db.StockCounts, Events: db.EventHoldings}
}

// runReconcile is orderd reconcile: it prints, per SKU, what the stock
// counter says was taken, what orders hold and reserve, and what the
// events count, and returns errDrift (exit 1) if any SKU drifts.
func runReconcile(ctx context.Context, cfg *Config, args []string, stdout io.Writer, _ *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("reconcile takes no arguments, got %q (see orderd reconcile --help)", args)}
	}
	db, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := newReconciler(db).Reconcile(ctx)
	if err != nil {
		return err
	}
	return printReconciliation(stdout, rows)
}

// printReconciliation writes rows as a table and returns errDrift if one
// is not ok.
func printReconciliation(w io.Writer, rows []order.Reconciliation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SKU\tNAME\tSTOCK\tINITIAL\tRESTOCKED\tTAKEN\tHELD(ORDERS)\tRESERVED\tHELD(EVENTS)\tDRIFT\tEVENTS DRIFT\tOK\t")
	bad := 0
	for _, r := range rows {
		ev, evd := "-", "-"
		if r.HeldByEvents != nil {
			ev, evd = fmt.Sprint(*r.HeldByEvents), fmt.Sprint(*r.EventsDrift)
		}
		ok := "ok"
		if !r.OK {
			ok, bad = "DRIFT", bad+1
		}
		name := r.Name
		if len(name) > 24 {
			name = name[:24]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t\n",
			r.SKUID, name, r.Stock, r.Initial, r.Restocked, r.TakenByCounter, r.HeldByOrders, r.Reserved, ev, r.Drift, evd, ok)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad > 0 {
		fmt.Fprintf(w, "%d of %d SKUs drift\n", bad, len(rows))
		return errDrift
	}
	fmt.Fprintf(w, "%d SKUs, no drift\n", len(rows))
	return nil
}
