package ingress

import (
	"context"
	"net/http"
	"strings"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

type principalKey struct{}

// principal returns the caller that user or admin authenticated.
func principal(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

// user wraps h so that it runs only for a caller with a valid bearer token.
func (s *Server) user(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || raw == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderd"`)
			return order.Errorf(order.EUNAUTHORIZED, "send Authorization: Bearer <token>")
		}
		p, err := s.Auth.VerifyContext(r.Context(), strings.TrimSpace(raw))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderd", error="invalid_token"`)
			return err
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// admin wraps h so that it runs only for an admin; a user gets 403.
func (s *Server) admin(h handlerFunc) handlerFunc {
	return s.user(func(w http.ResponseWriter, r *http.Request) error {
		if !principal(r.Context()).Admin {
			return order.Errorf(order.EFORBIDDEN, "this route is for admins")
		}
		return h(w, r)
	})
}
