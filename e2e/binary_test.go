package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The orderd binary, built once per test run by orderdBinary and removed by
// TestMain.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// orderdBinary builds cmd/orderd once and returns its path. It is built
// without the race detector: the processes' races are the package tests'
// concern, and an instrumented binary is slow to build and to run.
func orderdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "orderd-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "orderd")
		// The go command that runs the test exports GOROOT (and the
		// Makefile GOTOOLCHAIN): build with the same toolchain.
		goBin := "go"
		if root := os.Getenv("GOROOT"); root != "" {
			if p := filepath.Join(root, "bin", "go"); fileExists(p) {
				goBin = p
			}
		}
		cmd := exec.Command(goBin, "build", "-o", binPath, "github.com/flashsale/orderd/cmd/orderd")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build orderd: %v", buildErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// removeBinary removes what orderdBinary built.
func removeBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// fileExists reports whether path names an existing file.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
