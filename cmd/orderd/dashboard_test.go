package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/services/ingress"
	"github.com/flashsale/orderd/services/worker"
)

// dashboardMetrics returns the orderd_ metric names the Grafana dashboard
// queries, from every panel's targets' expr.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../deploy/grafana/orderd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	name := regexp.MustCompile(`\borderd_[a-zA-Z0-9_]+`)
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				if !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// registered reports whether reg holds a collector named name: registering
// another one under that name fails if it does.
func registered(reg *prometheus.Registry, name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe"})
	if err := reg.Register(probe); err != nil {
		return true
	}
	reg.Unregister(probe)
	return false
}

// TestDashboardMetricsAreRegistered builds the components cmd/orderd wires
// (the ingress, a worker, the batch publisher) on one registry and checks
// that every metric the dashboard queries is registered, and that the
// dashboard tells the whole story of a sale.
func TestDashboardMetricsAreRegistered(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ingress.New(ingress.Config{Partitions: 4}, ingress.Deps{Registry: reg})
	if _, err := worker.New(worker.Config{Partitions: 4}, worker.Deps{DB: &postgres.DB{}, JS: js, Redis: &redisstore.Store{}, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	bp := natsbus.NewBatchPublisher(js, natsbus.BatchConfig{Partitions: 4, Registerer: reg})
	defer bp.Close()

	names := dashboardMetrics(t)
	if len(names) < 15 {
		t.Fatalf("the dashboard queries only %v", names)
	}
	for _, n := range names {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && !registered(reg, n) {
				base = b
			}
		}
		if !registered(reg, base) {
			t.Errorf("the dashboard queries %s, which no component registers", n)
		}
	}
	for _, want := range []string{
		"orderd_orders_accepted_total", "orderd_worker_decisions_total", "orderd_partition_pending", "orderd_partition_ack_pending",
		"orderd_partition_pinned", "orderd_publish_batch_commands_bucket", "orderd_publish_seconds_bucket", "orderd_worker_batch_commands_bucket",
		"orderd_worker_batch_tx_seconds_bucket", "orderd_outbox_oldest_age_seconds", "orderd_outbox_pending_rows", "orderd_dead_letters_total",
		"orderd_dead_letters_unreplayed", "orderd_reconcile_drift", "orderd_reconcile_runs_with_drift_total",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	// The check can fail.
	if registered(reg, "orderd_no_such_metric") {
		t.Error("an unknown metric counts as registered")
	}
}
