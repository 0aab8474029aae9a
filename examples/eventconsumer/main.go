// Command eventconsumer is an example downstream consumer of the order
// processor's events: it follows ORDER_EVENTS with a durable consumer and
// prints each order's status changes, each payment to refund and each
// SKU's stock, once per event.
//
//	go run ./examples/eventconsumer --nats-url nats://127.0.0.1:4222 --durable shipping
//
// Stop it with Ctrl-C; started again with the same --durable it resumes
// where it stopped.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/examples/eventconsumer/feed"
	"github.com/flashsale/orderd/pkg/order"
)

func main() {
	url := flag.String("nats-url", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (env NATS_URL)")
	durable := flag.String("durable", "eventconsumer", "durable consumer name: one per downstream service")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*url, *durable, log); err != nil {
		log.Error("eventconsumer", "err", err)
		os.Exit(1)
	}
}

func run(url, durable string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(url, nats.Name("eventconsumer-"+durable), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	c, err := feed.New(ctx, js, feed.Config{Durable: durable}, printEvent, log)
	if err != nil {
		return err
	}
	log.Info("consuming order events", "url", nc.ConnectedUrlRedacted(), "durable", durable)
	return c.Run(ctx)
}

// printEvent writes one line per event.
func printEvent(_ context.Context, ev *feed.Event) error {
	if ev.Type == order.EventStockChanged {
		var sc order.StockChange
		if err := json.Unmarshal(ev.Data, &sc); err != nil {
			return err
		}
		fmt.Printf("%s %-16s sku %s stock %d sold %d (%+d)\n", ev.Time.Format("15:04:05.000"), ev.Type, sc.SKUID, sc.Stock, sc.UnitsSold, sc.Delta)
		return nil
	}
	if ev.Type == order.EventPaymentRefused {
		var rp order.RefusedPayment
		if err := json.Unmarshal(ev.Data, &rp); err != nil {
			return err
		}
		p := rp.Payment
		fmt.Printf("%s %-16s order %s %s: refund %d %s (provider_ref %s, %s)\n", ev.Time.Format("15:04:05.000"), ev.Type, rp.ID, rp.Status, p.Amount, p.Currency, p.ProviderRef, p.Reason)
		return nil
	}
	o, err := ev.Order()
	if err != nil {
		return err
	}
	fmt.Printf("%s %-16s order %s %s user %s %s %d %s %s\n", ev.Time.Format("15:04:05.000"), ev.Type, o.ID, o.Number, o.UserID, o.Status, o.GrandTotal, o.Currency, o.RejectReason)
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
