package main

import (
	goversion "go/version"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// fileMatch returns the first submatch of re in the repository file name.
func fileMatch(t *testing.T, name string, re *regexp.Regexp) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	m := re.FindSubmatch(raw)
	if m == nil {
		t.Fatalf("%s has no line matching %s", name, re)
	}
	return string(m[1])
}

// The Makefile builds with a toolchain that fixes the standard library's
// known vulnerabilities. go.mod's go line must ask for at least that
// toolchain, so that a plain `go build` (GOTOOLCHAIN=local or auto) cannot
// produce a binary with an older, vulnerable standard library, and the
// Dockerfile's build stage must use that same toolchain (the golang images
// set GOTOOLCHAIN=local, so an older image would refuse the build).
func TestGoModRequiresTheMakefilesToolchain(t *testing.T) {
	makeTC := fileMatch(t, "Makefile", regexp.MustCompile(`(?m)^export GOTOOLCHAIN := (go[0-9.]+)\s*$`))
	goLine := "go" + fileMatch(t, "go.mod", regexp.MustCompile(`(?m)^go ([0-9.]+)\s*$`))
	if goversion.Compare(goLine, makeTC) < 0 {
		t.Errorf("go.mod's go line is %s, older than the Makefile's toolchain %s: a plain go build can use the vulnerable %s", goLine, makeTC, goLine)
	}
	image := "go" + fileMatch(t, "deploy/Dockerfile", regexp.MustCompile(`(?m)^FROM golang:([0-9.]+)[-@ ]`))
	if !goversion.IsValid(image) || goversion.Compare(image, makeTC) != 0 {
		t.Errorf("deploy/Dockerfile builds with golang:%s, want the Makefile's toolchain %s pinned (golang:%s-...)", image[2:], makeTC, makeTC[2:])
	}
}
