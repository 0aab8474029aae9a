// Package docs holds the project's documentation; its test keeps the
// documentation true to the tree: every repository path that README.md and
// docs/*.md name exists.
package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// roots are the top-level entries a repository path starts with.
var roots = []string{
	"cmd/", "services/", "pkg/", "migrations/", "docs/", "deploy/", "scripts/",
	"e2e/", "examples/", ".ci/",
	"Makefile", "docker-compose.yml", "go.mod", "README.md", ".env.example",
}

var (
	codeSpan = regexp.MustCompile("`([^`\n]+)`")
	link     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
)

// candidates returns the repository paths a markdown text names: code
// spans and link targets that start with a root, cut at a line number, an
// anchor or a trailing punctuation mark. Spans with placeholders (<...>,
// NNNN, *, ...) or spaces are not paths.
func candidates(text string) []string {
	var out []string
	add := func(s string) {
		s = strings.TrimSpace(s)
		if i := strings.IndexAny(s, "#?"); i >= 0 {
			s = s[:i]
		}
		if i := strings.Index(s, ":"); i >= 0 { // file.go:123
			s = s[:i]
		}
		s = strings.TrimRight(s, ".,;)")
		s = strings.TrimPrefix(s, "./")
		if s == "" || strings.ContainsAny(s, " <>*{}$|") || strings.Contains(s, "NNNN") || strings.Contains(s, "...") {
			return
		}
		for _, r := range roots {
			if s == strings.TrimSuffix(r, "/") || strings.HasPrefix(s, r) {
				out = append(out, s)
				return
			}
		}
	}
	for _, m := range codeSpan.FindAllStringSubmatch(text, -1) {
		add(m[1])
	}
	for _, m := range link.FindAllStringSubmatch(text, -1) {
		if !strings.Contains(m[1], "://") {
			add(m[1])
		}
	}
	return out
}

// stripFences removes fenced code blocks: commands and example files in
// them name paths of the reader's machine (an overlay a shop creates).
func stripFences(text string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			in = !in
			continue
		}
		if !in {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func TestNamedPathsExist(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(repo, "README.md")}
	more, _ := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	files = append(files, more...)
	more, _ = filepath.Glob(filepath.Join(repo, "cmd", "*", "README.md"))
	files = append(files, more...)
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repo, f)
		base := filepath.Dir(f)
		for _, p := range candidates(stripFences(string(data))) {
			checked++
			// A link is relative to its file; a code span to the repository.
			if _, err := os.Stat(filepath.Join(repo, p)); err == nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(base, p)); err == nil {
				continue
			}
			t.Errorf("%s names %s, which does not exist", rel, p)
		}
	}
	t.Logf("%d paths named in %d files", checked, len(files))
	if checked < 20 {
		t.Errorf("only %d paths found in the docs: the scanner is broken", checked)
	}
}

func TestCandidates(t *testing.T) {
	got := candidates("see `pkg/order/ledger.go:64`, [design](docs/design.md#decisions), `orderd serve`, `migrations/NNNN_name.sql`, `cmd/<name>/`, [x](https://example.com/pkg/a)")
	want := []string{"pkg/order/ledger.go", "docs/design.md"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("candidates = %q, want %q", got, want)
	}
}
