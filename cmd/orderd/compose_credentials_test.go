package main

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/redisstore"
)

// composeURL parses a URL of docker-compose.yml and returns it with the
// name of the environment variable its password comes from.
func composeURL(t *testing.T, service, key, raw string) (*url.URL, string) {
	t.Helper()
	m := regexp.MustCompile(`^([a-z]+://[^:@/]+):\$\{([A-Z_]+):\?[^}]*\}@(.*)$`).FindStringSubmatch(raw)
	if m == nil {
		t.Fatalf("%s %s = %q: want scheme://user:${VAR:?...}@host", service, key, raw)
	}
	u, err := url.Parse(m[1] + ":x@" + m[3])
	if err != nil {
		t.Fatalf("%s %s: %v", service, key, err)
	}
	return u, m[2]
}

// Every service of the compose deployment connects as a user of its own
// with the least it needs: the service's PostgreSQL role is not the
// superuser nor the schema's owner (migrate is), Redis's default user is
// off, and the ingress and the workers are different NATS users of
// deploy/nats.conf, whose passwords the nats service is given.
func TestComposeCredentials(t *testing.T) {
	c, _ := readCompose(t)
	pg := c.Services["postgres"]
	superuser := pg.Environment["POSTGRES_USER"]
	initScript, err := os.ReadFile(filepath.Join(repoRoot, "deploy/postgres-init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pg.Volumes, "./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-orderd-roles.sh:ro") {
		t.Errorf("postgres volumes = %q, want deploy/postgres-init.sh in /docker-entrypoint-initdb.d", pg.Volumes)
	}
	natsConf, err := os.ReadFile(filepath.Join(repoRoot, "deploy/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}

	roles := map[string]string{} // service -> PostgreSQL role
	for _, name := range []string{"migrate", "api", "worker"} {
		u, pass := composeURL(t, name, "DATABASE_URL", c.Services[name].Environment["DATABASE_URL"])
		roles[name] = u.User.Username()
		if pg.Environment[pass] == "" {
			t.Errorf("%s's PostgreSQL password ${%s} is not given to the postgres service, whose init script sets it", name, pass)
		}
		if !strings.Contains(string(initScript), "CREATE ROLE "+roles[name]+" ") || !strings.Contains(string(initScript), pass) {
			t.Errorf("deploy/postgres-init.sh does not create the role %s with ${%s}", roles[name], pass)
		}
	}
	if roles["api"] == superuser || roles["api"] == roles["migrate"] || roles["worker"] != roles["api"] {
		t.Errorf("PostgreSQL roles: superuser %s, migrate %s, api %s, worker %s; want the service's own role, neither the superuser nor the migrations'",
			superuser, roles["migrate"], roles["api"], roles["worker"])
	}
	if env := c.Services["migrate"].Environment; env["REDIS_URL"] != "" || env["NATS_URL"] != "" || env["JWT_SECRET"] != "" {
		t.Errorf("migrate is given Redis, NATS or JWT credentials it does not use: %v", env)
	}

	natsUsers := map[string]string{"api": natsAPIUser, "worker": natsWorkerUser}
	for name, user := range natsUsers {
		env := c.Services[name].Environment
		u, pass := composeURL(t, name, "REDIS_URL", env["REDIS_URL"])
		if u.User.Username() == "" || u.User.Username() == "default" || c.Services["redis"].Environment[pass] == "" {
			t.Errorf("%s REDIS_URL = %q: want the redis service's ACL user", name, env["REDIS_URL"])
		}
		u, pass = composeURL(t, name, "NATS_URL", env["NATS_URL"])
		if u.User.Username() != user {
			t.Errorf("%s connects to NATS as %q, want %s", name, u.User.Username(), user)
		}
		if c.Services["nats"].Environment[pass] == "" {
			t.Errorf("%s's NATS password ${%s} is not given to the nats service", name, pass)
		}
		if !regexp.MustCompile(`user: ` + user + `, password: \$` + pass + `,`).Match(natsConf) {
			t.Errorf("deploy/nats.conf has no user %s with the password $%s", user, pass)
		}
	}
}

// The redis service's command, run with a private redis-server, turns the
// default user off and lets orderd's ACL user in with the password of the
// environment, without the dangerous commands; its healthcheck passes.
func TestComposeRedisACL(t *testing.T) {
	c, _ := readCompose(t)
	redis := c.Services["redis"]
	if len(redis.Command) != 3 || redis.Command[0] != "sh" || redis.Command[1] != "-c" {
		t.Fatalf("redis command = %q, want sh -c SCRIPT", redis.Command)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server: %v (run scripts/deps.sh)", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// Compose turns $$ into $; then the server listens where the test says.
	script := strings.ReplaceAll(redis.Command[2], "$$", "$") +
		" --port " + strconv.Itoa(port) + " --bind 127.0.0.1 --dir " + t.TempDir() + " --save ''"
	pass := randomSecret(t)
	env := append(os.Environ(), "REDIS_PASSWORD="+pass)
	srv := exec.Command("sh", "-c", script)
	srv.Env = env
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })

	ctx := context.Background()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var s *redisstore.Store
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if s, err = redisstore.Open(ctx, "redis://orderd:"+pass+"@"+addr+"/0", ""); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("open as orderd: %v", err)
	}
	defer s.Close()
	if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("SET as orderd: %v", err)
	}
	if err := s.Client().FlushAll(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("FLUSHALL as orderd = %v, want NOPERM", err)
	}
	if d, err := redisstore.Open(ctx, "redis://"+addr+"/0", ""); err == nil {
		d.Close()
		t.Error("the default user connects")
	}
	hc := strings.ReplaceAll(strings.Join(redis.Healthcheck.Test[1:], " "), "$$", "$")
	check := exec.Command("sh", "-c", strings.Replace(hc, "redis-cli", "redis-cli -p "+strconv.Itoa(port), 1))
	check.Env = env
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("healthcheck %q: %v\n%s", hc, err, out)
	}
}
