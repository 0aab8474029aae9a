package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The deployment files live at the repository root, two levels up.
const repoRoot = "../.."

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Restart     string            `yaml:"restart"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

func readCompose(t *testing.T) (composeFile, string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c, string(raw)
}

func TestComposeServices(t *testing.T) {
	c, _ := readCompose(t)
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"api", "grafana", "migrate", "nats", "postgres", "prometheus", "redis", "worker"}
	if !slices.Equal(names, want) {
		t.Fatalf("services = %q, want %q", names, want)
	}

	images := map[string]string{"postgres": "postgres:15", "redis": "redis:7", "nats": "nats:2.15"}
	for name, want := range images {
		if img := c.Services[name].Image; img != want && !strings.HasPrefix(img, want+"-") {
			t.Errorf("%s image = %q, want %s", name, img, want)
		}
	}

	commands := map[string][]string{"migrate": {"migrate", "up"}, "api": {"api"}, "worker": {"worker"}}
	for name, cmd := range commands {
		s := c.Services[name]
		if !slices.Equal(s.Command, cmd) {
			t.Errorf("%s command = %q, want %q", name, s.Command, cmd)
		}
		if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Context != "." {
			t.Errorf("%s is not built from deploy/Dockerfile with the repository as context: %+v", name, s.Build)
		}
		if s.Environment["NATS_URL"] == "" && name != "migrate" {
			t.Errorf("%s has no NATS_URL: it would start no shared NATS", name)
		}
		if s.Environment["PARTITIONS"] != c.Services["api"].Environment["PARTITIONS"] {
			t.Errorf("%s PARTITIONS = %q, api's = %q: every process must agree", name, s.Environment["PARTITIONS"], c.Services["api"].Environment["PARTITIONS"])
		}
	}
	if c.Services["migrate"].Restart != "no" {
		t.Errorf("migrate restart = %q, want no (it runs once)", c.Services["migrate"].Restart)
	}
	for _, name := range []string{"api", "worker"} {
		s := c.Services[name]
		if s.Environment["NO_MIGRATE"] != "true" {
			t.Errorf("%s NO_MIGRATE = %q, want true (migrate runs them once)", name, s.Environment["NO_MIGRATE"])
		}
		if s.StopGracePeriod == "" {
			t.Errorf("%s has no stop_grace_period: docker's 10s default cuts the drain", name)
		}
	}
	if r := c.Services["worker"].Deploy.Replicas; r != 2 {
		t.Errorf("worker replicas = %d, want 2", r)
	}

	// Only the ingress is published to the network, on 8080; Grafana and
	// Prometheus on the host's loopback alone.
	for name, s := range c.Services {
		switch {
		case name == "api":
			if len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":8080") {
				t.Errorf("api ports = %q, want one mapping to 8080", s.Ports)
			}
		case name == "grafana" || name == "prometheus":
			if len(s.Ports) != 1 || !strings.HasPrefix(s.Ports[0], "127.0.0.1:") {
				t.Errorf("%s ports = %q, want one mapping on 127.0.0.1", name, s.Ports)
			}
		case len(s.Ports) > 0:
			t.Errorf("%s publishes ports %q; only api should", name, s.Ports)
		}
	}
}

func TestComposeHealthchecksAndOrder(t *testing.T) {
	c, _ := readCompose(t)
	checks := map[string][]string{
		"postgres": {"pg_isready"},
		"redis":    {"redis-cli", "ping"},
		"nats":     {"http://127.0.0.1:8222/healthz?js-enabled-only=true"},
		"api":      {"orderd", "probe", "http://127.0.0.1:8080/readyz"},
		"worker":   {"orderd", "probe", "http://127.0.0.1:9090/readyz"},
	}
	for name, words := range checks {
		hc := c.Services[name].Healthcheck
		if hc == nil || len(hc.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
			continue
		}
		test := strings.Join(hc.Test, " ")
		for _, w := range words {
			if !strings.Contains(test, w) {
				t.Errorf("%s healthcheck %q lacks %q", name, test, w)
			}
		}
	}
	deps := map[string]map[string]string{
		"migrate": {"postgres": "service_healthy"},
		"api":     {"postgres": "service_healthy", "redis": "service_healthy", "nats": "service_healthy", "migrate": "service_completed_successfully"},
		"worker":  {"postgres": "service_healthy", "redis": "service_healthy", "nats": "service_healthy", "migrate": "service_completed_successfully"},
	}
	for name, want := range deps {
		got := map[string]string{}
		for d, v := range c.Services[name].DependsOn {
			got[d] = v.Condition
		}
		for d, cond := range want {
			if got[d] != cond {
				t.Errorf("%s depends_on %s: condition %q, want %q", name, d, got[d], cond)
			}
		}
	}
}

// JetStream's store is a volume and every write is fsynced before the
// PubAck (SPEC 5.8).
func TestComposeNATSIsDurable(t *testing.T) {
	c, _ := readCompose(t)
	nats := c.Services["nats"]
	if !slices.Contains(nats.Volumes, "./deploy/nats.conf:/etc/nats/nats.conf:ro") {
		t.Errorf("nats volumes = %q, want deploy/nats.conf mounted at /etc/nats/nats.conf", nats.Volumes)
	}
	if !slices.Equal(nats.Command, []string{"-c", "/etc/nats/nats.conf"}) {
		t.Errorf("nats command = %q, want -c /etc/nats/nats.conf", nats.Command)
	}
	var dataVolume string
	for _, v := range nats.Volumes {
		if src, ok := strings.CutSuffix(v, ":/data"); ok {
			dataVolume = src
		}
	}
	if _, ok := c.Volumes[dataVolume]; !ok || dataVolume == "" {
		t.Errorf("nats /data is not a named volume: %q", nats.Volumes)
	}

	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	js := confBlock(t, string(raw), "jetstream")
	if js["sync_interval"] != "always" {
		t.Errorf("nats.conf jetstream sync_interval = %q, want always", js["sync_interval"])
	}
	if js["store_dir"] != "/data" {
		t.Errorf("nats.conf jetstream store_dir = %q, want /data", js["store_dir"])
	}
	if top := confBlock(t, string(raw), ""); top["http_port"] != "8222" {
		t.Errorf("nats.conf http_port = %q, want 8222 (the healthcheck's port)", top["http_port"])
	}
}

// confBlock returns the "key: value" settings of one block of a NATS config
// file ("" for the top level), without comments.
func confBlock(t *testing.T, conf, block string) map[string]string {
	t.Helper()
	out := map[string]string{}
	depth, in := 0, block == ""
	sc := bufio.NewScanner(strings.NewReader(conf))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		switch {
		case strings.HasSuffix(line, "{"):
			name := strings.TrimSpace(strings.TrimSuffix(line, "{"))
			if depth == 0 && name == block {
				in = true
			} else if block == "" {
				in = false
			}
			depth++
			continue
		case line == "}":
			depth--
			in = block == "" && depth == 0
			continue
		}
		if !in {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out
}

var (
	requiredVar = regexp.MustCompile(`^\$\{[A-Z_]+:\?[^}]+\}$`)
	secretKey   = regexp.MustCompile(`(?i)(secret|password|passwd|token|api_?key)`)
	urlPassword = regexp.MustCompile(`://[^:/@\s]+:([^@\s]+)@`)
)

// No secret is committed: every secret in docker-compose.yml comes from the
// environment with ${VAR:?message}, and .env.example leaves them empty.
func TestComposeCommitsNoSecret(t *testing.T) {
	c, raw := readCompose(t)
	for name, s := range c.Services {
		for k, v := range s.Environment {
			if secretKey.MatchString(k) && !requiredVar.MatchString(v) {
				t.Errorf("%s %s = %q: a secret must be ${%s:?...} from the environment", name, k, v, k)
			}
		}
	}
	for _, m := range urlPassword.FindAllStringSubmatch(raw, -1) {
		if !requiredVar.MatchString(m[1]) {
			t.Errorf("a URL in docker-compose.yml carries a literal password %q", m[1])
		}
	}
	if !strings.Contains(raw, "${JWT_SECRET:?") || !strings.Contains(raw, "${PAYMENT_WEBHOOK_SECRET:?") || !strings.Contains(raw, "${POSTGRES_PASSWORD:?") {
		t.Error("docker-compose.yml does not require JWT_SECRET, PAYMENT_WEBHOOK_SECRET and POSTGRES_PASSWORD")
	}

	env, err := os.ReadFile(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(string(env), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf(".env.example: %q is not KEY=VALUE", line)
			continue
		}
		if secretKey.MatchString(k) {
			seen++
			if v != "" {
				t.Errorf(".env.example: %s has a value; leave secrets empty", k)
			}
		}
	}
	if seen < 3 {
		t.Errorf(".env.example names %d secrets, want JWT_SECRET, PAYMENT_WEBHOOK_SECRET and POSTGRES_PASSWORD", seen)
	}
}

func TestDockerfileIsMultiStage(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	for _, line := range strings.Split(string(raw), "\n") {
		if f, ok := strings.CutPrefix(line, "FROM "); ok {
			froms = append(froms, f)
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("FROM lines = %q, want a golang:1.26 build stage and a runtime stage", froms)
	}
	for _, want := range []string{"./cmd/orderd", "CGO_ENABLED=0", "USER nonroot", `ENTRYPOINT ["/usr/local/bin/orderd"]`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
}
