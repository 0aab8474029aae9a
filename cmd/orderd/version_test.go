package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	const rev = "0546dfb2c3d4e5f60718293a4b5c6d7e8f901234"
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"tagged release", &debug.BuildInfo{GoVersion: "go1.26.10", Main: debug.Module{Path: "github.com/flashsale/orderd", Version: "v1.4.0"},
			Settings: vcs("-trimpath", "true", "vcs", "git", "vcs.revision", rev, "vcs.time", "2026-12-04T10:00:00Z", "vcs.modified", "false")},
			true, "orderd v1.4.0 revision " + rev + " (2026-12-04T10:00:00Z) go1.26.10"},
		{"pseudo-version, uncommitted changes", &debug.BuildInfo{GoVersion: "go1.26.10", Main: debug.Module{Version: "v0.0.0-20261204100000-0546dfb2c3d4+dirty"},
			Settings: vcs("vcs.revision", rev, "vcs.time", "2026-12-04T10:00:00Z", "vcs.modified", "true")},
			true, "orderd v0.0.0-20261204100000-0546dfb2c3d4+dirty revision " + rev + " (2026-12-04T10:00:00Z, modified) go1.26.10"},
		{"(devel) with a revision", &debug.BuildInfo{GoVersion: "go1.26.10", Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs.revision", rev, "vcs.modified", "true")},
			true, "orderd devel revision " + rev + " (modified) go1.26.10"},
		{"(devel) without VCS information", &debug.BuildInfo{GoVersion: "go1.26.10", Main: debug.Module{Version: "(devel)"},
			Settings: vcs("-buildmode", "exe", "CGO_ENABLED", "0")},
			true, "orderd devel revision unknown go1.26.10"},
		{"no version at all", &debug.BuildInfo{}, true, "orderd devel revision unknown"},
		{"no build information", nil, false, "orderd devel revision unknown (no build information in the binary)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine(tc.bi, tc.ok); got != tc.want {
				t.Errorf("versionLine =\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
}

// `orderd version` and `orderd --version` print the same line, from the
// binary's own build information; neither needs a database or a secret.
func TestVersionCommand(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	want := versionLine(bi, ok) + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Errorf("orderd %s: %v", args[0], err)
			continue
		}
		if stdout.String() != want {
			t.Errorf("orderd %s printed %q, want %q", args[0], stdout.String(), want)
		}
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version", "extra"}, &stdout, &stdout); err == nil {
		t.Error("orderd version extra: no error")
	}
	if err := run(context.Background(), []string{"help"}, &stdout, &stdout); err != nil || !strings.Contains(stdout.String(), "version") {
		t.Errorf("orderd help does not list version (%v):\n%s", err, stdout.String())
	}
}

// A binary built with go build prints what the toolchain recorded in it:
// the same module version and, when it was built in a git checkout, the
// same vcs.revision (debug/buildinfo reads them from the file).
func TestVersionOfBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "orderd")
	// go test exports GOROOT: build with the toolchain that runs the test.
	goBin := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		goBin = filepath.Join(root, "bin", "go")
	}
	// -buildvcs=auto overrides a GOFLAGS=-buildvcs=false: in a git checkout
	// the revision is recorded; elsewhere (a git worktree, a tarball) not.
	build := exec.Command(goBin, "build", "-buildvcs=auto", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	want := versionLine(bi, true)
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil {
			t.Fatalf("orderd %s: %v", arg, err)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("orderd %s printed %q, want %q", arg, got, want)
		}
	}
	t.Logf("orderd --version: %s", want)
}
