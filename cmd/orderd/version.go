package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

const versionUsage = `usage: orderd version (or orderd --version)

Prints the module version, the VCS revision the binary was built from, its
commit time, whether the working tree had uncommitted changes, and the Go
version, as the Go toolchain recorded them in the binary.
`

// runVersion prints the build's version line (versionLine) to stdout.
func runVersion(args []string, stdout io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(stdout, versionUsage)
		return nil
	}
	if len(args) > 0 {
		return usageError{fmt.Errorf("version takes no arguments, got %q", args)}
	}
	bi, ok := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(bi, ok))
	return nil
}

// versionLine describes a build in one line, from what the Go toolchain
// recorded in the binary (runtime/debug.ReadBuildInfo):
//
//	orderd v1.4.0 revision 0123abcd... (2026-12-04T10:00:00Z) go1.26.10
//	orderd devel revision 0123abcd... (2026-12-04T10:00:00Z, modified) go1.26.10
//	orderd devel revision unknown go1.26.10
//
// The version is the main module's: a tag (v1.4.0) or a pseudo-version when
// built with `go install module@version` or from a VCS checkout, "devel"
// when the toolchain says "(devel)" or nothing. The revision, its commit time
// and "modified" (uncommitted changes) come from the vcs.* settings, which
// `go build` records in a git checkout unless -buildvcs=false; a binary
// built without them (from a source tree with no .git, as the container
// image is) says "revision unknown".
func versionLine(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "orderd devel revision unknown (no build information in the binary)"
	}
	version := bi.Main.Version
	if version == "" || version == "(devel)" {
		version = "devel"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "orderd %s revision ", version)
	rev := settings["vcs.revision"]
	if rev == "" {
		b.WriteString("unknown")
	} else {
		b.WriteString(rev)
		var notes []string
		if t := settings["vcs.time"]; t != "" {
			notes = append(notes, t)
		}
		if settings["vcs.modified"] == "true" {
			notes = append(notes, "modified")
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(notes, ", "))
		}
	}
	if bi.GoVersion != "" {
		fmt.Fprintf(&b, " %s", bi.GoVersion)
	}
	return b.String()
}
