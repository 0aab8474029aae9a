package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// makeVar returns the value of "NAME ?= value" in the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	return fileMatch(t, "Makefile", regexp.MustCompile(`(?m)^`+name+` \?= (\S+)\s*$`))
}

// unreachableDB makes a start that gets past the configuration fail at
// once, without a database.
const unreachableDB = "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"

// startErr runs orderd role with env set and args, and returns what run
// returned: a configuration refusal, or the failure to reach the database
// (the first thing a start that passed its checks does).
func startErr(t *testing.T, env map[string]string, args ...string) error {
	t.Helper()
	clearEnv(t)
	t.Setenv("DATABASE_URL", unreachableDB)
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	for k, v := range env {
		t.Setenv(k, v)
	}
	return run(context.Background(), args, io.Discard, io.Discard)
}

// wantRefused checks that err refuses the configuration (a usage error, so
// exit status 2) and says every one of words.
func wantRefused(t *testing.T, err error, words ...string) {
	t.Helper()
	if err == nil || !errors.As(err, new(usageError)) {
		t.Errorf("start = %v, want the configuration refused", err)
		return
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("start = %v, want it to say %q", err, w)
		}
	}
}

// wantPastConfig checks that err is not a configuration refusal: the start
// went on to the database.
func wantPastConfig(t *testing.T, err error) {
	t.Helper()
	if err == nil || errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("start = %v, want the configuration accepted (and the unreachable database to fail it)", err)
	}
}

// The development secrets that ship in the Makefile are public: serve and
// api refuse them, and a payment webhook secret shorter than 32 bytes,
// unless development mode is on (ORDERD_DEV=true or --dev, which make run
// sets). The refusal names the option and the way out.
func TestDevSecretsRefusedOutsideDevMode(t *testing.T) {
	devJWT, devHook := makeVar(t, "JWT_SECRET"), makeVar(t, "PAYMENT_WEBHOOK_SECRET")
	strongHook := "whsec-" + testSecret // 44 bytes
	for _, role := range []string{"serve", "api"} {
		t.Run(role, func(t *testing.T) {
			wantRefused(t, startErr(t, map[string]string{"JWT_SECRET": devJWT}, role),
				"JWT_SECRET", "development secret", "ORDERD_DEV=true", "--dev")
			wantRefused(t, startErr(t, map[string]string{"JWT_SECRET": testSecret, "PAYMENT_WEBHOOK_SECRET": devHook}, role),
				"PAYMENT_WEBHOOK_SECRET", "development secret")
			wantRefused(t, startErr(t, map[string]string{"JWT_SECRET": testSecret, "PAYMENT_WEBHOOK_SECRET": "whsec-short-0123456789"}, role),
				"PAYMENT_WEBHOOK_SECRET must be at least 32 bytes", "not 22")
			// Both at once: every problem in one message.
			wantRefused(t, startErr(t, map[string]string{"JWT_SECRET": devJWT, "PAYMENT_WEBHOOK_SECRET": devHook}, role),
				"JWT_SECRET", "PAYMENT_WEBHOOK_SECRET")

			// A secret of the operator's own passes.
			wantPastConfig(t, startErr(t, map[string]string{"JWT_SECRET": testSecret, "PAYMENT_WEBHOOK_SECRET": strongHook}, role))
			// Development mode takes the development secrets, either way.
			dev := map[string]string{"JWT_SECRET": devJWT, "PAYMENT_WEBHOOK_SECRET": devHook}
			wantPastConfig(t, startErr(t, dev, role, "--dev"))
			dev["ORDERD_DEV"] = "true"
			wantPastConfig(t, startErr(t, dev, role))
			// and a short webhook secret.
			wantPastConfig(t, startErr(t, map[string]string{"JWT_SECRET": testSecret, "PAYMENT_WEBHOOK_SECRET": "whsec-short", "ORDERD_DEV": "true"}, role))
		})
	}
	// A worker verifies no token and no webhook: nothing to refuse.
	wantPastConfig(t, startErr(t, map[string]string{"JWT_SECRET": devJWT, "PAYMENT_WEBHOOK_SECRET": devHook}, "worker"))
	// orderd token mints development tokens with the development secret.
	clearEnv(t)
	t.Setenv("JWT_SECRET", devJWT)
	if err := run(context.Background(), []string{"token", "--sub", "u1"}, io.Discard, io.Discard); err != nil {
		t.Errorf("token with the development secret = %v", err)
	}
}

// Every development secret in the repository (the Makefile's, the bench
// scripts', cmd/chaos's) is refused outside development mode, as a JWT
// secret and as a webhook secret, however it is spelled in the file.
func TestEveryRepositoryDevSecretIsRefused(t *testing.T) {
	devSecret := regexp.MustCompile(`dev-only-[A-Za-z0-9_-]+`)
	found := map[string][]string{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "data", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, "_test.go") || d.Name() == "go.sum" {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range devSecret.FindAllString(string(raw), -1) {
			found[s] = append(found[s], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 2 {
		t.Fatalf("found %d development secrets (%v), want at least the Makefile's two", len(found), found)
	}
	for s, paths := range found {
		c := &Config{}
		for _, o := range options {
			o.bind(c).Set(o.def)
		}
		c.JWTSecret, c.PaymentWebhookSecret = s, s
		err := c.Validate(RoleAPI)
		if err == nil || strings.Count(err.Error(), "development secret") != 2 {
			t.Errorf("%s (in %q) as JWT_SECRET and PAYMENT_WEBHOOK_SECRET: Validate = %v, want both refused as development secrets", s, paths, err)
		}
	}
}

// make run serves on the loopback interface only, in development mode
// (it sets the development secrets).
func TestMakeRunIsLocalAndDev(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-C", repoRoot, "--no-print-directory", "-n", "run")
	// Not the flags of a make that runs this test (make test).
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run: %v\n%s", err, out)
	}
	var serve string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "./cmd/orderd serve") {
			serve = line
		}
	}
	fields := strings.Fields(serve)
	if serve == "" || !slices.Contains(fields, "HTTP_ADDR=127.0.0.1:8080") ||
		!(slices.Contains(fields, "--dev") || slices.Contains(fields, "ORDERD_DEV=true")) {
		t.Errorf("make run's orderd serve = %q, want HTTP_ADDR=127.0.0.1:8080 and --dev (or ORDERD_DEV=true)\nmake -n run:\n%s", serve, out)
	}
}
