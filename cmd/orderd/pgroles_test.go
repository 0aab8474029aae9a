package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// privatePG is a PostgreSQL server of the test's own (initdb in a
// temporary directory, a free port), so that the test may create roles
// without touching the shared server. Root runs it as the postgres user,
// as PostgreSQL requires.
type privatePG struct {
	bin    string // the server's bin directory
	dir    string // data directory and socket
	port   int
	asUser []string // the command prefix that runs a server program
}

func startPrivatePG(t *testing.T) *privatePG {
	t.Helper()
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		t.Fatalf("pg_config --bindir: %v (is PostgreSQL installed? run scripts/deps.sh)", err)
	}
	pg := &privatePG{bin: strings.TrimSpace(string(out))}
	// Under /tmp rather than t.TempDir, whose parent only root may enter.
	pg.dir, err = os.MkdirTemp("", "orderd-pgroles-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pg.dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(pg.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		pg.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pg.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	data := filepath.Join(pg.dir, "data")
	pg.run(t, "initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
	pg.run(t, "pg_ctl", "-D", data, "-w", "-l", filepath.Join(pg.dir, "log"), "start",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off", pg.port, pg.dir))
	t.Cleanup(func() { pg.command("pg_ctl", "-D", data, "-m", "immediate", "stop").Run() })
	return pg
}

// command is one of the server's programs, run as the server's user.
func (pg *privatePG) command(prog string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, pg.asUser...), filepath.Join(pg.bin, prog)), args...)
	return exec.Command(argv[0], argv[1:]...)
}

// run runs one of the server's programs and fails the test if it fails.
func (pg *privatePG) run(t *testing.T, prog string, args ...string) {
	t.Helper()
	cmd := pg.command(prog, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}

// psqlEnv is the environment that points psql at the server's socket as
// its superuser, as the postgres image's entrypoint does for the init
// scripts.
func (pg *privatePG) psqlEnv(extra ...string) []string {
	return append(append(os.Environ(), "PGHOST="+pg.dir, "PGPORT="+strconv.Itoa(pg.port),
		"POSTGRES_USER=postgres", "POSTGRES_DB=orderd"), extra...)
}

// url is a TCP URL of the server as role.
func (pg *privatePG) url(role, password string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/orderd?sslmode=disable", role, password, pg.port)
}

// deploy/postgres-init.sh, run as the postgres image runs it, makes the
// roles docker-compose.yml uses: orderd migrate applies the migrations as
// orderd_migrate, and orderd serve runs a sale as orderd, a role that is no
// superuser and may change no schema.
func TestPostgresInitRoles(t *testing.T) {
	pg := startPrivatePG(t)
	appPass, migratePass := randomSecret(t), randomSecret(t)
	// The entrypoint creates POSTGRES_DB, then runs the init scripts.
	createdb := exec.Command("psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-c", "CREATE DATABASE orderd")
	createdb.Env = pg.psqlEnv()
	if out, err := createdb.CombinedOutput(); err != nil {
		t.Fatalf("create database: %v\n%s", err, out)
	}
	initScript := exec.Command("bash", filepath.Join(repoRoot, "deploy/postgres-init.sh"))
	initScript.Env = pg.psqlEnv("POSTGRES_APP_PASSWORD="+appPass, "POSTGRES_MIGRATE_PASSWORD="+migratePass)
	if out, err := initScript.CombinedOutput(); err != nil {
		t.Fatalf("deploy/postgres-init.sh: %v\n%s", err, out)
	}

	clearEnv(t)
	if err := run(context.Background(), []string{"migrate", "--database-url", pg.url("orderd_migrate", migratePass), "up"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("orderd migrate up as orderd_migrate: %v", err)
	}

	app, err := sqlx.Open("postgres", pg.url("orderd", appPass))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	var super bool
	if err := app.Get(&super, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"); err != nil || super {
		t.Errorf("the app role: superuser %v, %v; want false", super, err)
	}
	for _, ddl := range []string{"CREATE TABLE intruder (id int)", "DROP TABLE orders", "ALTER TABLE skus ADD COLUMN x int", "TRUNCATE orders"} {
		if _, err := app.Exec(ddl); err == nil || !strings.Contains(err.Error(), "permission denied") && !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("%s as the app role = %v, want permission denied", ddl, err)
		}
	}

	// A sale as the app role: every query of serve's ingress and workers.
	_, prefix := redistest.New(t)
	p := startOrderd(t, "serve",
		"--database-url", pg.url("orderd", appPass), "--no-migrate", "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", "127.0.0.1:0", "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir(),
		"--partitions", "2", "--shutdown-timeout", "5s")
	checkoutConfirmed(t, p.base)
	p.stop()
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Errorf("serve as the app role: %v", err)
	}
	for _, l := range p.logs.lines(t) {
		if l["level"] == "ERROR" {
			t.Errorf("serve as the app role logged %v", l)
		}
	}
}
