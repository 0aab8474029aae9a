package ingress

import (
	_ "embed" // for the OpenAPI document
	"net/http"
)

// openAPIDoc is the OpenAPI 3.0 document of the whole API, kept true by
// openapi_test.go: every registered route is in it, and real responses
// validate against its schemas.
//
//go:embed openapi.json
var openAPIDoc []byte

// openAPI is GET /openapi.json.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, err := w.Write(openAPIDoc)
	if err != nil {
		s.log.DebugContext(r.Context(), "write openapi", "err", err)
	}
	return nil
}
