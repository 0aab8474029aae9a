package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// decodeStrict decodes the YAML file at path (relative to the repository)
// into v, refusing keys v has no field for: a misspelt key in a
// configuration file fails the test instead of being ignored by it.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// prometheusConfig is the part of Prometheus's configuration that
// deploy/prometheus.yml uses.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names           []string `yaml:"names"`
			Type            string   `yaml:"type"`
			Port            int      `yaml:"port"`
			RefreshInterval string   `yaml:"refresh_interval"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

// scrapeTargets returns the host:port targets of each job, and its metrics
// path.
func (c prometheusConfig) scrapeTargets() (targets map[string][]string, paths map[string]string) {
	targets, paths = map[string][]string{}, map[string]string{}
	for _, sc := range c.ScrapeConfigs {
		paths[sc.JobName] = cmpOr(sc.MetricsPath, "/metrics")
		for _, st := range sc.StaticConfigs {
			targets[sc.JobName] = append(targets[sc.JobName], st.Targets...)
		}
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				targets[sc.JobName] = append(targets[sc.JobName], net.JoinHostPort(n, strconv.Itoa(d.Port)))
			}
		}
	}
	return targets, paths
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// optionDefault returns the built-in default of the option read from env.
func optionDefault(t *testing.T, env string) string {
	t.Helper()
	for _, o := range options {
		if o.env == env {
			return o.def
		}
	}
	t.Fatalf("no option %s", env)
	return ""
}

// portOf returns the port of a listen address such as ":8080".
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return port
}

// Prometheus scrapes every orderd process of the compose deployment where
// it serves /metrics: the api service on its HTTP_ADDR, the worker service
// (each replica) on METRICS_ADDR, whose ports the services' own
// healthchecks use too.
func TestComposePrometheusScrapesAPIAndWorker(t *testing.T) {
	c, _ := readCompose(t)
	prom := c.Services["prometheus"]
	if !strings.HasPrefix(prom.Image, "prom/prometheus:v") {
		t.Errorf("prometheus image = %q, want prom/prometheus at a pinned version", prom.Image)
	}
	if !slices.Contains(prom.Volumes, "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro") ||
		!slices.Contains(prom.Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus does not run with deploy/prometheus.yml: volumes %q, command %q", prom.Volumes, prom.Command)
	}
	if !slices.ContainsFunc(prom.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/prometheus") }) {
		t.Errorf("prometheus keeps its data in no volume: %q", prom.Volumes)
	}

	var cfg prometheusConfig
	decodeStrict(t, "deploy/prometheus.yml", &cfg)
	targets, paths := cfg.scrapeTargets()

	// Where each orderd process serves /metrics in compose.
	api := c.Services["api"].Environment["HTTP_ADDR"]
	worker := cmpOr(c.Services["worker"].Environment["METRICS_ADDR"], optionDefault(t, "METRICS_ADDR"))
	want := map[string]string{
		"api":    net.JoinHostPort("api", portOf(t, api)),
		"worker": net.JoinHostPort("worker", portOf(t, worker)),
	}
	for service, target := range want {
		var jobs []string
		for job, ts := range targets {
			if slices.Contains(ts, target) {
				jobs = append(jobs, job)
				if paths[job] != "/metrics" {
					t.Errorf("job %s scrapes %s at %s, want /metrics", job, target, paths[job])
				}
			}
		}
		if len(jobs) != 1 {
			t.Errorf("%s (%s) is scraped by jobs %q, want one; the jobs: %v", service, target, jobs, targets)
		}
		hc := strings.Join(c.Services[service].Healthcheck.Test, " ")
		if !strings.Contains(hc, "http://127.0.0.1:"+portOf(t, target)+"/") {
			t.Errorf("%s is scraped on %s but its healthcheck %q uses another port", service, target, hc)
		}
	}
	// Every target is an orderd service of the compose file, on the port it
	// serves: a renamed service or port breaks the scrape, not silently.
	for job, ts := range targets {
		for _, tg := range ts {
			if !slices.Contains([]string{want["api"], want["worker"]}, tg) {
				t.Errorf("job %s scrapes %s, which is not where api or worker serve /metrics", job, tg)
			}
		}
	}
	// A worker scaled to several replicas is scraped replica by replica.
	for _, sc := range cfg.ScrapeConfigs {
		for _, d := range sc.DNSSDConfigs {
			if d.Type != "A" {
				t.Errorf("job %s dns_sd type %q, want A (one target per container)", sc.JobName, d.Type)
			}
		}
	}
}

// grafanaDatasources is Grafana's data source provisioning file.
type grafanaDatasources struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name      string `yaml:"name"`
		UID       string `yaml:"uid"`
		Type      string `yaml:"type"`
		Access    string `yaml:"access"`
		URL       string `yaml:"url"`
		IsDefault bool   `yaml:"isDefault"`
		Editable  bool   `yaml:"editable"`
		JSONData  struct {
			TimeInterval string `yaml:"timeInterval"`
		} `yaml:"jsonData"`
	} `yaml:"datasources"`
}

// grafanaDashboards is Grafana's dashboard provider provisioning file.
type grafanaDashboards struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name                  string `yaml:"name"`
		OrgID                 int    `yaml:"orgId"`
		Folder                string `yaml:"folder"`
		Type                  string `yaml:"type"`
		DisableDeletion       bool   `yaml:"disableDeletion"`
		AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
		UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `yaml:"path"`
			FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// hostPath returns the file of the repository that a service's bind mount
// puts at containerPath, or "".
func hostPath(volumes []string, containerPath string) string {
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			continue
		}
		src, dst := parts[0], parts[1]
		if rel, ok := strings.CutPrefix(containerPath, dst); ok && (rel == "" || strings.HasPrefix(rel, "/")) {
			return filepath.Join(repoRoot, src, rel)
		}
	}
	return ""
}

// Grafana starts with the Prometheus data source and the dashboard of
// deploy/grafana provisioned: the provisioning files are mounted where
// Grafana reads them, the data source is the prometheus service, and the
// dashboard provider's path holds deploy/grafana/orderd-dashboard.json.
func TestComposeGrafanaProvisionsTheDashboard(t *testing.T) {
	c, _ := readCompose(t)
	g := c.Services["grafana"]
	if !strings.HasPrefix(g.Image, "grafana/grafana:") || strings.HasSuffix(g.Image, ":latest") {
		t.Errorf("grafana image = %q, want grafana/grafana at a pinned version", g.Image)
	}
	if d := g.DependsOn["prometheus"].Condition; d == "" {
		t.Error("grafana does not depend on prometheus")
	}
	const provisioning = "/etc/grafana/provisioning"
	dsFile := hostPath(g.Volumes, provisioning+"/datasources/prometheus.yml")
	dbFile := hostPath(g.Volumes, provisioning+"/dashboards/orderd.yml")
	if dsFile == "" || dbFile == "" {
		t.Fatalf("grafana volumes %q do not mount the provisioning files at %s", g.Volumes, provisioning)
	}
	rel := func(p string) string { r, _ := filepath.Rel(repoRoot, p); return r }

	var ds grafanaDatasources
	decodeStrict(t, rel(dsFile), &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("%s: apiVersion %d, %d data sources; want 1 and one", rel(dsFile), ds.APIVersion, len(ds.Datasources))
	}
	src := ds.Datasources[0]
	u, err := url.Parse(src.URL)
	if err != nil {
		t.Fatal(err)
	}
	promPort := c.Services["prometheus"].Ports[0][strings.LastIndex(c.Services["prometheus"].Ports[0], ":")+1:]
	if src.Type != "prometheus" || !src.IsDefault || src.Access != "proxy" || u.Hostname() != "prometheus" || u.Port() != promPort {
		t.Errorf("data source %+v: want the default, of type prometheus, proxied to the prometheus service on %s", src, promPort)
	}

	var dbs grafanaDashboards
	decodeStrict(t, rel(dbFile), &dbs)
	if dbs.APIVersion != 1 || len(dbs.Providers) != 1 || dbs.Providers[0].Type != "file" {
		t.Fatalf("%s: want apiVersion 1 and one file provider: %+v", rel(dbFile), dbs)
	}
	dashboard := hostPath(g.Volumes, dbs.Providers[0].Options.Path+"/orderd-dashboard.json")
	if want := filepath.Join(repoRoot, "deploy/grafana/orderd-dashboard.json"); dashboard != want {
		t.Fatalf("the provider reads %s, where grafana's volumes %q put %q, want %s", dbs.Providers[0].Options.Path, g.Volumes, dashboard, want)
	}
	raw, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatalf("the provisioned dashboard: %v", err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name, Type, Query string
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil || dash.UID == "" {
		t.Fatalf("the provisioned dashboard has no uid (%v)", err)
	}
	// The dashboard's ${datasource} picks a data source of the provisioned
	// type.
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Query != src.Type {
			t.Errorf("the dashboard's variable %s wants a %s data source, the provisioned one is %s", v.Name, v.Query, src.Type)
		}
	}
	if home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" && hostPath(g.Volumes, home) != dashboard {
		t.Errorf("the home dashboard %s is not the provisioned dashboard", home)
	}
}

var (
	promQLStrip = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)|"[^"]*"`)
	promQLIdent = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promQLFuncs = []string{
		"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
		"topk", "bottomk", "clamp_min", "clamp_max", "abs", "delta", "deriv", "time", "vector",
		"and", "or", "unless", "on", "ignoring", "group_left", "group_right", "offset", "bool",
	}
)

// Every metric the dashboard queries is one Prometheus scrapes: orderd's
// own, from the api and worker jobs. The NATS panels (queue depth, unacked,
// pinned worker) read orderd_partition_*, which the workers take from
// JetStream's consumer info; no panel needs a NATS exporter that compose
// does not run.
func TestComposeDashboardQueriesScrapedMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/orderd-dashboard.json"))
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
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			for _, id := range promQLIdent.FindAllString(promQLStrip.ReplaceAllString(tg.Expr, " "), -1) {
				if !slices.Contains(promQLFuncs, id) && !strings.HasPrefix(id, "orderd_") {
					t.Errorf("panel %q queries %s (in %q), which neither api nor worker serves", p.Title, id, tg.Expr)
				}
			}
		}
	}
	if exprs < 15 {
		t.Fatalf("the dashboard has %d queries", exprs)
	}
}
