package ingress

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/flashsale/orderd/pkg/order"
)

// adminUI is the operator page: static HTML, JavaScript and CSS, no
// library and nothing fetched from elsewhere, so it works offline. It holds
// no secret: the page asks the operator for an admin token, keeps it in
// sessionStorage and sends it as a bearer token to the admin API
// (GET /v1/admin/stream for the live numbers, the pause, resume and replay
// routes for the switches).
//
//go:embed adminui
var adminUI embed.FS

// adminFiles is adminUI rooted at its folder.
var adminFiles = func() fs.FS {
	f, err := fs.Sub(adminUI, "adminui")
	if err != nil {
		panic(err)
	}
	return f
}()

// adminPageCSP lets the page load only its own files and talk only to its
// own origin.
const adminPageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// adminTypes are the Content-Types of the page's files, fixed rather than
// read from the system's MIME table.
var adminTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// adminPageRoutes registers the operator page and its live feed.
func (s *Server) adminPageRoutes() {
	s.handle("GET /admin/", s.adminPage)
	s.adminStreamRoutes()
}

// adminPage is GET /admin/ (the page) and GET /admin/<file> (its script and
// style). It needs no token: the page is the same for everyone and reads
// nothing without one. An unknown file is a 404 problem.
func (s *Server) adminPage(w http.ResponseWriter, r *http.Request) error {
	name := strings.TrimPrefix(r.URL.Path, "/admin/")
	if name == "" {
		name = "index.html"
	}
	if strings.Contains(name, "/") || strings.HasPrefix(name, ".") || !fs.ValidPath(name) {
		return order.Errorf(order.ENOTFOUND, "no such file of the operator page")
	}
	data, err := fs.ReadFile(adminFiles, name)
	if err != nil {
		return order.Errorf(order.ENOTFOUND, "no such file of the operator page")
	}
	ct, ok := adminTypes[path.Ext(name)]
	if !ok {
		ct = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", adminPageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(data); err != nil {
		s.log.DebugContext(r.Context(), "write admin page", "err", err)
	}
	return nil
}
