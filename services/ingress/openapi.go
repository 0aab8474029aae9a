package ingress

import "net/http"

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	return nil
}
