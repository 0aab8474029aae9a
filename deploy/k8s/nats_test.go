package k8s_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
)

// secretRef is a Kubernetes secretKeyRef.
type secretRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

// natsValues is the part of the official NATS Helm chart's values that
// nats-values.yaml sets, laid out as the chart's values.yaml (config.*,
// container.*). Decoding is strict: a key the chart does not have at that
// place fails the test.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `yaml:"enabled"`
			Replicas int  `yaml:"replicas"`
		} `yaml:"cluster"`
		JetStream struct {
			Enabled   bool `yaml:"enabled"`
			FileStore struct {
				Enabled bool   `yaml:"enabled"`
				Dir     string `yaml:"dir"`
				PVC     struct {
					Enabled bool   `yaml:"enabled"`
					Size    string `yaml:"size"`
				} `yaml:"pvc"`
			} `yaml:"fileStore"`
			MemoryStore struct {
				Enabled bool `yaml:"enabled"`
			} `yaml:"memoryStore"`
			Merge map[string]any `yaml:"merge"`
		} `yaml:"jetstream"`
		Monitor struct {
			Enabled bool `yaml:"enabled"`
			Port    int  `yaml:"port"`
		} `yaml:"monitor"`
		Merge map[string]any `yaml:"merge"`
	} `yaml:"config"`
	Container struct {
		Env map[string]struct {
			ValueFrom struct {
				SecretKeyRef secretRef `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Resources map[string]map[string]string `yaml:"resources"`
	} `yaml:"container"`
	PodDisruptionBudget struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"podDisruptionBudget"`
}

func readNATSValues(t *testing.T) natsValues {
	t.Helper()
	raw, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	return v
}

// chartUnquote is the chart's rule for merge values: a string "<< X >>" is
// written into nats.conf unquoted (a variable, a size with a unit).
var chartUnquote = regexp.MustCompile(`"<<\s+(.*?)\s+>>"`)

// renderedConfig writes the server configuration the chart makes of the
// values' merge blocks (config.merge at the top, config.jetstream.merge in
// the jetstream block, JSON with the "<< >>" strings unquoted) around a
// JetStream store in dir.
func renderedConfig(t *testing.T, v natsValues, dir string) string {
	t.Helper()
	js := map[string]any{"store_dir": dir}
	for k, x := range v.Config.JetStream.Merge {
		js[k] = x
	}
	conf := map[string]any{"jetstream": js}
	for k, x := range v.Config.Merge {
		conf[k] = x
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // the chart's toPrettyRawJson: "orders.cmd.>" stays as it is
	enc.SetIndent("", "  ")
	if err := enc.Encode(conf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, chartUnquote.ReplaceAll(b.Bytes(), []byte("$1")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// NATS on Kubernetes is the official chart with nats-values.yaml: a
// three-server cluster, JetStream on a volume each, every write fsynced
// before its PubAck, and the users of deploy/nats.conf with the same
// permissions. nats-server itself loads the configuration the chart would
// write and deploy/nats.conf, and the two must agree; the passwords come
// from the Secret keys the orderd pods use for the same users.
func TestNATSValues(t *testing.T) {
	v := readNATSValues(t)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("cluster enabled %v with %d replicas, want a cluster of 3", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	if !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled || c.JetStream.FileStore.PVC.Size == "" || c.JetStream.MemoryStore.Enabled {
		t.Errorf("jetstream %+v: want the file store on a persistent volume, no memory store", c.JetStream)
	}
	if !c.Monitor.Enabled || c.Monitor.Port != 8222 {
		t.Errorf("monitor %+v: want the monitoring port 8222 (the chart's probes)", c.Monitor)
	}
	if res := v.Container.Resources; res["requests"]["cpu"] == "" || res["requests"]["memory"] == "" || res["limits"]["memory"] == "" {
		t.Errorf("the nats container's resources %v: want requests and a memory limit", res)
	}

	// STREAM_REPLICAS of the orderd pods is the cluster's size.
	o := build(t)
	api := container(t, &o.deployments["orderd-api"].Spec.Template.Spec, "api")
	if got := o.env(t, api)["STREAM_REPLICAS"]; got != strconv.Itoa(c.Cluster.Replicas) {
		t.Errorf("STREAM_REPLICAS = %q, the NATS cluster has %d servers", got, c.Cluster.Replicas)
	}

	// The passwords: each $VAR the authorization block reads is in the
	// container's env from a secretKeyRef, the one the orderd pods use for
	// that user's password.
	passwords := map[string]string{} // env var -> value the test gives it
	for name, e := range v.Container.Env {
		if e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" {
			t.Errorf("container.env %s is not from a secretKeyRef", name)
		}
		passwords[name] = "pw-" + name
		t.Setenv(name, passwords[name])
	}
	orderdRefs := map[string]secretRef{} // NATS user -> the Secret key of its password in the orderd pods
	for _, tc := range []struct{ deployment, container string }{{"orderd-api", "api"}, {"orderd-worker", "worker"}} {
		ctr := container(t, &o.deployments[tc.deployment].Spec.Template.Spec, tc.container)
		user, ref := natsUserRef(t, ctr)
		orderdRefs[user] = ref
	}

	dir := t.TempDir()
	rendered, err := server.ProcessConfigFile(renderedConfig(t, v, dir))
	if err != nil {
		t.Fatalf("nats-server refuses the configuration the chart would write: %v", err)
	}
	if !rendered.JetStream || !rendered.SyncAlways {
		t.Errorf("jetstream %v, sync always %v: want JetStream with sync_interval: always", rendered.JetStream, rendered.SyncAlways)
	}
	for k, val := range map[string]string{"NATS_API_PASSWORD": "x", "NATS_WORKER_PASSWORD": "y"} {
		if _, ok := passwords[k]; !ok {
			t.Setenv(k, val) // deploy/nats.conf reads both
		}
	}
	compose, err := server.ProcessConfigFile(filepath.Join(repoRoot, "deploy/nats.conf"))
	if err != nil {
		t.Fatalf("deploy/nats.conf: %v", err)
	}
	if rendered.MaxPayload != compose.MaxPayload {
		t.Errorf("max_payload %d, deploy/nats.conf's %d", rendered.MaxPayload, compose.MaxPayload)
	}
	want := map[string]*server.Permissions{}
	for _, u := range compose.Users {
		want[u.Username] = u.Permissions
	}
	got := map[string]*server.Permissions{}
	for _, u := range rendered.Users {
		got[u.Username] = u.Permissions
		ref, ok := orderdRefs[u.Username]
		if !ok {
			t.Errorf("NATS user %s is used by no orderd Deployment", u.Username)
			continue
		}
		// The password the server reads is the one of the same Secret key.
		found := false
		for name, e := range v.Container.Env {
			if e.ValueFrom.SecretKeyRef == ref && u.Password == passwords[name] {
				found = true
			}
		}
		if !found {
			t.Errorf("NATS user %s's password is not the Secret key %s/%s that the orderd pods connect with", u.Username, ref.Name, ref.Key)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the chart's users and permissions differ from deploy/nats.conf's (-nats.conf +nats-values.yaml):\n%s", diff)
	}
}

// natsUserRef returns the NATS user an orderd container connects as and
// the Secret key its password comes from.
func natsUserRef(t *testing.T, c corev1.Container) (string, secretRef) {
	t.Helper()
	refs := map[string]secretRef{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			refs[e.Name] = secretRef{Name: e.ValueFrom.SecretKeyRef.Name, Key: e.ValueFrom.SecretKeyRef.Key}
		}
	}
	for _, e := range c.Env {
		if e.Name != "NATS_URL" {
			continue
		}
		m := userInfo.FindStringSubmatch(e.Value)
		if m == nil {
			t.Fatalf("%s NATS_URL %q has no user", c.Name, e.Value)
		}
		ref := envRef.FindStringSubmatch(m[2])
		if ref == nil {
			t.Fatalf("%s NATS_URL's password is not $(VAR): %q", c.Name, e.Value)
		}
		return m[1], refs[ref[1]]
	}
	t.Fatalf("%s has no NATS_URL", c.Name)
	return "", secretRef{}
}
