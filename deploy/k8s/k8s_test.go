// Package k8s_test builds the kustomize base in this directory as kubectl
// apply -k would, decodes every object strictly into the Kubernetes API
// types, and checks what a deployment of orderd depends on: probes where
// orderd serves them, resources, images, security contexts, secrets only by
// reference, the autoscaler and disruption budget of the ingress, the
// migration Job, and the NATS chart's values (loaded by nats-server).
package k8s_test

import (
	"encoding/json"
	"errors"
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
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// repoRoot is the repository, two levels up from deploy/k8s.
const repoRoot = "../.."

// objects is the built base, by kind and name.
type objects struct {
	deployments map[string]*appsv1.Deployment
	jobs        map[string]*batchv1.Job
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pdbs        map[string]*policyv1.PodDisruptionBudget
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
}

// build runs kustomize on this directory and decodes each object into its
// API type, refusing fields the type does not have: a misspelt or
// misplaced field fails here instead of being dropped by the API server.
func build(t *testing.T) objects {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	o := objects{
		deployments: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
	}
	for _, r := range m.Resources() {
		raw, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(raw, &tm); err != nil {
			t.Fatal(err)
		}
		var meta *metav1.ObjectMeta
		switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
		case "apps/v1 Deployment":
			meta = &decode(t, raw, o.deployments, r.GetName()).ObjectMeta
		case "batch/v1 Job":
			meta = &decode(t, raw, o.jobs, r.GetName()).ObjectMeta
		case "v1 Service":
			meta = &decode(t, raw, o.services, r.GetName()).ObjectMeta
		case "v1 ConfigMap":
			meta = &decode(t, raw, o.configMaps, r.GetName()).ObjectMeta
		case "policy/v1 PodDisruptionBudget":
			meta = &decode(t, raw, o.pdbs, r.GetName()).ObjectMeta
		case "autoscaling/v2 HorizontalPodAutoscaler":
			meta = &decode(t, raw, o.hpas, r.GetName()).ObjectMeta
		case "v1 Secret":
			t.Errorf("the base commits a Secret, %s: the shop creates its Secrets, the base only references them", r.GetName())
			continue
		default:
			t.Errorf("unexpected object %s %s", gvk, r.GetName())
			continue
		}
		if meta.Namespace != "orderd" {
			t.Errorf("%s %s is in namespace %q, want orderd", tm.Kind, meta.Name, meta.Namespace)
		}
	}
	return o
}

// decode decodes raw strictly into a new T and files it under name, as
// the API server's strict field validation does: an unknown field, a
// duplicate, or a field spelt in another case (which encoding/json would
// accept) is an error.
func decode[T any](t *testing.T, raw []byte, into map[string]*T, name string) *T {
	t.Helper()
	v := new(T)
	strict, err := k8sjson.UnmarshalStrict(raw, v, k8sjson.DisallowDuplicateFields, k8sjson.DisallowUnknownFields)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(strict) > 0 {
		t.Fatalf("%s: %v", name, errors.Join(strict...))
	}
	into[name] = v
	return v
}

// podSpecs returns the pod template of every workload, by workload name.
func (o objects) podSpecs() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for n, d := range o.deployments {
		out[n] = &d.Spec.Template
	}
	for n, j := range o.jobs {
		out[n] = &j.Spec.Template
	}
	return out
}

// allContainers returns a pod's init containers and containers.
func allContainers(p *corev1.PodSpec) []corev1.Container {
	return slices.Concat(p.InitContainers, p.Containers)
}

// container returns the container named name of a pod.
func container(t *testing.T, p *corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range allContainers(p) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// env returns what a container's environment variables hold: envFrom's
// ConfigMaps, overridden by env's plain values. Variables from a Secret or
// a field are missing from it.
func (o objects) env(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range c.EnvFrom {
		if f.ConfigMapRef == nil {
			t.Errorf("container %s takes envFrom other than a ConfigMap: %+v", c.Name, f)
			continue
		}
		cm, ok := o.configMaps[f.ConfigMapRef.Name]
		if !ok {
			t.Errorf("container %s reads ConfigMap %s, which the base does not make", c.Name, f.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			out[k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			out[e.Name] = e.Value
		} else {
			delete(out, e.Name)
		}
	}
	return out
}

// optionDefault reads the built-in default of an orderd option from
// cmd/orderd/config.go, where each option is {flag, env, def, ...}.
func optionDefault(t *testing.T, env string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "cmd/orderd/config.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`env: "` + env + `", def: "([^"]*)"`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("cmd/orderd/config.go has no option %s with a default", env)
	}
	return string(m[1])
}

// listenPort is the port of a listen address such as ":8080".
func listenPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// probePort resolves a probe's port (a number or a container port's name).
func probePort(t *testing.T, c corev1.Container, p *corev1.Probe) int {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("container %s: a probe that is not an HTTP GET: %+v", c.Name, p)
	}
	if p.HTTPGet.Port.StrVal == "" {
		return p.HTTPGet.Port.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.HTTPGet.Port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	t.Fatalf("container %s: probe port %q names no container port", c.Name, p.HTTPGet.Port.StrVal)
	return 0
}

// The api and worker Deployments are probed where orderd serves /healthz
// and /readyz: the api on HTTP_ADDR, the worker on METRICS_ADDR (their
// values in the pod, or orderd's defaults), and the ports are declared.
func TestProbesMatchWhatOrderdServes(t *testing.T) {
	o := build(t)
	for _, tc := range []struct{ deployment, container, addrEnv string }{
		{"orderd-api", "api", "HTTP_ADDR"},
		{"orderd-worker", "worker", "METRICS_ADDR"},
	} {
		d, ok := o.deployments[tc.deployment]
		if !ok {
			t.Errorf("no Deployment %s", tc.deployment)
			continue
		}
		c := container(t, &d.Spec.Template.Spec, tc.container)
		addr, ok := o.env(t, c)[tc.addrEnv]
		if !ok {
			addr = optionDefault(t, tc.addrEnv)
		}
		port := listenPort(t, addr)
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"startup", c.StartupProbe, "/healthz"}} {
			if p.probe == nil {
				t.Errorf("%s has no %s probe", tc.deployment, p.name)
				continue
			}
			if got := probePort(t, c, p.probe); got != port || p.probe.HTTPGet.Path != p.path {
				t.Errorf("%s %s probe GETs %s on %d, want %s on %d (%s=%s)", tc.deployment, p.name, p.probe.HTTPGet.Path, got, p.path, port, tc.addrEnv, addr)
			}
		}
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return int(cp.ContainerPort) == port }) {
			t.Errorf("%s declares ports %v, not %d", tc.deployment, c.Ports, port)
		}
		if a := d.Spec.Template.Annotations; a["prometheus.io/port"] != strconv.Itoa(port) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("%s scrape annotations %v, want /metrics on %d", tc.deployment, a, port)
		}
	}
	svc := o.services["orderd-api"]
	if svc == nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.StrVal != "http" {
		t.Errorf("the orderd-api Service does not send to the api's http port: %+v", svc)
	}
}

// Every container, init containers included, has CPU and memory requests
// and limits, a pinned image, and runs as a non-root user with a read-only
// root file system, no privilege escalation and no capabilities: orderd
// writes no file outside the embedded NATS store of serve, which the base
// does not run.
func TestContainersAreBoundedPinnedAndUnprivileged(t *testing.T) {
	o := build(t)
	for name, tmpl := range o.podSpecs() {
		p := &tmpl.Spec
		if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
			t.Errorf("%s mounts a service account token; orderd does not call the Kubernetes API", name)
		}
		if sc := p.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s pod security context %+v: want runAsNonRoot and a non-zero runAsUser", name, sc)
		}
		for _, c := range allContainers(p) {
			where := name + "/" + c.Name
			for _, rl := range []struct {
				kind string
				list corev1.ResourceList
			}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if q, ok := rl.list[r]; !ok || q.IsZero() {
						t.Errorf("%s has no %s %s", where, r, rl.kind)
					}
				}
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if req, lim := c.Resources.Requests[r], c.Resources.Limits[r]; req.Cmp(lim) > 0 {
					t.Errorf("%s requests more %s (%s) than its limit (%s)", where, r, req.String(), lim.String())
				}
			}
			repo, tag, hasTag := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
			if !hasTag && !strings.Contains(c.Image, "@sha256:") || tag == "latest" || tag == "" || repo != "orderd" {
				t.Errorf("%s image %q: want the orderd image with a tag other than latest (or a digest)", where, c.Image)
			}
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s has no security context", where)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s allows privilege escalation", where)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s has a writable root file system", where)
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
				t.Errorf("%s does not require a non-root user", where)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s keeps capabilities: %+v", where, sc.Capabilities)
			}
		}
	}
}

var (
	secretName = regexp.MustCompile(`(?i)(secret|password|passwd|token|api_?key|private)`)
	userInfo   = regexp.MustCompile(`://([^:/@\s]+):([^@\s]*)@`)
	envRef     = regexp.MustCompile(`^\$\(([A-Z_][A-Z0-9_]*)\)$`)
)

// No secret is committed: a variable whose name says secret comes from a
// secretKeyRef, a URL's password is $(VAR) of such a variable defined
// before it (Kubernetes expands it when the container starts), and the
// ConfigMaps hold none. The Secrets referenced are the ones the shop
// creates (docs/operations.md names their keys).
func TestSecretsAreReferencedNotCommitted(t *testing.T) {
	o := build(t)
	wantKeys := map[string][]string{
		"orderd":      {"jwt-secret", "payment-webhook-secret", "postgres-app-password", "postgres-migrate-password", "redis-password"},
		"orderd-nats": {"api-password", "worker-password"},
	}
	used := map[string][]string{}
	for name, tmpl := range o.podSpecs() {
		for _, c := range allContainers(&tmpl.Spec) {
			where := name + "/" + c.Name
			fromSecret := map[string]bool{}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
					ref := e.ValueFrom.SecretKeyRef
					fromSecret[e.Name] = true
					if !slices.Contains(used[ref.Name], ref.Key) {
						used[ref.Name] = append(used[ref.Name], ref.Key)
					}
				case secretName.MatchString(e.Name):
					t.Errorf("%s %s is not from a secretKeyRef: %+v", where, e.Name, e)
				}
				if m := userInfo.FindStringSubmatch(e.Value); m != nil {
					ref := envRef.FindStringSubmatch(m[2])
					if ref == nil || !fromSecret[ref[1]] {
						t.Errorf("%s %s carries a password that is not $(VAR) of a secretKeyRef variable defined before it: %q", where, e.Name, e.Value)
					}
				}
			}
		}
	}
	for secret, keys := range used {
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys[secret]) {
			t.Errorf("the pods read keys %q of Secret %s, want %q (docs/operations.md lists these)", keys, secret, wantKeys[secret])
		}
	}
	if len(used) != len(wantKeys) {
		t.Errorf("the pods read the Secrets %v, want %v", used, wantKeys)
	}
	for name, cm := range o.configMaps {
		for k, v := range cm.Data {
			if secretName.MatchString(k) || userInfo.MatchString(v) {
				t.Errorf("ConfigMap %s holds %s=%q, which looks like a secret", name, k, v)
			}
		}
	}
	// And no manifest in the directory is a Secret, listed or not.
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^kind:\s*Secret\s*$`).Match(raw) {
			t.Errorf("%s holds a Secret", f)
		}
	}
}

// The autoscaler scales the api Deployment on CPU, which its containers
// request; the disruption budget selects the api pods, and only them.
func TestAPIScalingAndDisruptionBudget(t *testing.T) {
	o := build(t)
	api, worker := o.deployments["orderd-api"], o.deployments["orderd-worker"]
	if api == nil || worker == nil {
		t.Fatal("no orderd-api or orderd-worker Deployment")
	}
	hpa := o.hpas["orderd-api"]
	if hpa == nil {
		t.Fatal("no HorizontalPodAutoscaler orderd-api")
	}
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != api.Name {
		t.Errorf("the autoscaler targets %+v, want the Deployment %s", ref, api.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
		t.Errorf("autoscaler replicas %v..%d: want at least 2, and room to grow", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	cpu := false
	for _, m := range hpa.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU &&
			m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil {
			cpu = true
		}
	}
	if !cpu {
		t.Errorf("the autoscaler does not scale on CPU utilisation: %+v", hpa.Spec.Metrics)
	}
	if api.Spec.Replicas != nil {
		t.Errorf("orderd-api sets replicas (%d): each apply would undo the autoscaler's", *api.Spec.Replicas)
	}

	pdb := o.pdbs["orderd-api"]
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget orderd-api")
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(api.Spec.Template.Labels)) {
		t.Errorf("the budget's selector %s does not select the api pods %v", sel, api.Spec.Template.Labels)
	}
	for name, tmpl := range o.podSpecs() {
		if name != api.Name && sel.Matches(labels.Set(tmpl.Labels)) {
			t.Errorf("the api's budget also selects the pods of %s", name)
		}
	}
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		t.Error("the budget allows any disruption")
	}
}

// urlUser returns the user of a URL whose password is $(VAR).
func urlUser(t *testing.T, where, raw string) string {
	t.Helper()
	u, err := url.Parse(envRef.ReplaceAllString(userInfo.ReplaceAllString(raw, "://$1:x@"), ""))
	if err != nil || u.User == nil {
		t.Fatalf("%s: %q is not a URL with a user (%v)", where, raw, err)
	}
	return u.User.Username()
}

// composeUsers returns the user each compose service connects as, per URL
// variable: the Kubernetes base keeps the compose deployment's roles.
func composeUsers(t *testing.T) map[string]map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	// Compose's passwords are ${VAR:?message}, with spaces: take the user.
	user := regexp.MustCompile(`^[a-z]+://([^:/@\s]+):`)
	out := map[string]map[string]string{}
	for name, s := range c.Services {
		out[name] = map[string]string{}
		for _, k := range []string{"DATABASE_URL", "REDIS_URL", "NATS_URL"} {
			if m := user.FindStringSubmatch(s.Environment[k]); m != nil {
				out[name][k] = m[1]
			}
		}
	}
	return out
}

// The migrations run once, in the orderd-migrate Job, as the schema's
// owner; the Deployments do not migrate (NO_MIGRATE=true) and start once
// the migrations are applied (an init container running orderd migrate
// wait as the service's role). Every process connects as the user compose
// gives the same role.
func TestMigrationJobAndRoles(t *testing.T) {
	o := build(t)
	job := o.jobs["orderd-migrate"]
	if job == nil {
		t.Fatal("no Job orderd-migrate")
	}
	jc := container(t, &job.Spec.Template.Spec, "migrate")
	if len(jc.Command) != 0 || !slices.Equal(jc.Args, []string{"migrate", "up"}) {
		t.Errorf("the Job runs command %q args %q, want the image's orderd with migrate up", jc.Command, jc.Args)
	}
	if rp := job.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
		t.Errorf("the Job's restart policy is %q", rp)
	}
	compose := composeUsers(t)
	dbURL := func(c corev1.Container) string {
		for _, e := range c.Env {
			if e.Name == "DATABASE_URL" {
				return e.Value
			}
		}
		return ""
	}
	if got, want := urlUser(t, "orderd-migrate", dbURL(jc)), compose["migrate"]["DATABASE_URL"]; got != want {
		t.Errorf("the Job connects to PostgreSQL as %q, want the schema's owner %q (compose's migrate)", got, want)
	}

	for _, tc := range []struct{ deployment, container, compose string }{
		{"orderd-api", "api", "api"},
		{"orderd-worker", "worker", "worker"},
	} {
		d := o.deployments[tc.deployment]
		if d == nil {
			t.Fatalf("no Deployment %s", tc.deployment)
		}
		c := container(t, &d.Spec.Template.Spec, tc.container)
		env := o.env(t, c)
		if env["NO_MIGRATE"] != "true" {
			t.Errorf("%s NO_MIGRATE = %q: it would migrate at start", tc.deployment, env["NO_MIGRATE"])
		}
		for _, k := range []string{"DATABASE_URL", "REDIS_URL", "NATS_URL"} {
			if got, want := urlUser(t, tc.deployment+" "+k, env[k]), compose[tc.compose][k]; got != want {
				t.Errorf("%s %s connects as %q, compose's %s as %q", tc.deployment, k, got, tc.compose, want)
			}
		}
		inits := d.Spec.Template.Spec.InitContainers
		if len(inits) != 1 || !slices.Equal(inits[0].Args, []string{"migrate", "wait"}) || inits[0].Image != c.Image {
			t.Errorf("%s init containers %+v: want one running orderd migrate wait from the same image", tc.deployment, inits)
			continue
		}
		if got := urlUser(t, tc.deployment+" init", dbURL(inits[0])); got != compose[tc.compose]["DATABASE_URL"] {
			t.Errorf("%s waits for the migrations as %q, want the service's role", tc.deployment, got)
		}
		if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g <= durationSeconds(t, env["SHUTDOWN_TIMEOUT"]) {
			t.Errorf("%s terminationGracePeriodSeconds %v is not longer than SHUTDOWN_TIMEOUT %s", tc.deployment, g, env["SHUTDOWN_TIMEOUT"])
		}
	}
	if a, w := o.env(t, container(t, &o.deployments["orderd-api"].Spec.Template.Spec, "api")), o.env(t, container(t, &o.deployments["orderd-worker"].Spec.Template.Spec, "worker")); a["PARTITIONS"] == "" || a["PARTITIONS"] != w["PARTITIONS"] {
		t.Errorf("PARTITIONS: api %q, worker %q; every process must agree", a["PARTITIONS"], w["PARTITIONS"])
	}
}

// durationSeconds parses a Go duration in whole seconds ("20s").
func durationSeconds(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSuffix(s, "s"), 10, 64)
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT %q: want whole seconds", s)
	}
	return n
}

// PostgreSQL and Redis are the shop's: ExternalName Services give them the
// names the URLs use.
func TestExternalServices(t *testing.T) {
	o := build(t)
	for _, name := range []string{"postgres", "redis"} {
		s := o.services[name]
		if s == nil || s.Spec.Type != corev1.ServiceTypeExternalName || s.Spec.ExternalName == "" {
			t.Errorf("Service %s: want an ExternalName naming the shop's server: %+v", name, s)
		}
	}
	env := o.env(t, container(t, &o.deployments["orderd-api"].Spec.Template.Spec, "api"))
	for k, host := range map[string]string{"DATABASE_URL": "postgres:5432", "REDIS_URL": "redis:6379", "NATS_URL": "nats:4222"} {
		if !strings.Contains(env[k], "@"+host+"/") && !strings.HasSuffix(env[k], "@"+host) {
			t.Errorf("api %s = %q does not reach %s", k, env[k], host)
		}
	}
}

// The overlay docs/operations.md shows builds on this base and does what
// it says: the shop's image, and the postgres and redis Services pointing
// at the shop's servers.
func TestDocumentedOverlay(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n\\s*# overlays/shop/kustomization.yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/operations.md shows no overlays/shop/kustomization.yaml")
	}
	overlay := regexp.MustCompile(`(?m)^ {3}`).ReplaceAll(m[1], nil) // the list item's indent
	// The repository's layout in memory: the base at deploy/k8s, the
	// overlay at overlays/shop, as the documentation puts them.
	fs := filesys.MakeFsInMemory()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.WriteFile(filepath.Join("/repo/deploy/k8s", f), raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := fs.WriteFile("/repo/overlays/shop/kustomization.yaml", overlay); err != nil {
		t.Fatal(err)
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/repo/overlays/shop")
	if err != nil {
		t.Fatalf("kustomize build of the documented overlay: %v\n%s", err, overlay)
	}
	var images, external []string
	for _, r := range res.Resources() {
		raw, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		switch r.GetKind() {
		case "Deployment", "Job":
			var d struct {
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatal(err)
			}
			for _, c := range allContainers(&d.Spec.Template.Spec) {
				images = append(images, c.Image)
			}
		case "Service":
			var s corev1.Service
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			if s.Spec.Type == corev1.ServiceTypeExternalName {
				external = append(external, s.Name+"="+s.Spec.ExternalName)
			}
		}
	}
	slices.Sort(external)
	if want := []string{"postgres=db.internal.example", "redis=cache.internal.example"}; !slices.Equal(external, want) {
		t.Errorf("the overlay's external services %q, want %q", external, want)
	}
	for _, img := range images {
		if !strings.HasPrefix(img, "registry.example.com/shop/orderd:") {
			t.Errorf("the overlay runs image %q, not the shop's", img)
		}
	}
	if len(images) != 5 { // api and worker with their init containers, the Job
		t.Errorf("the overlay has %d containers, want 5: %q", len(images), images)
	}
}
