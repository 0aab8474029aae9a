package ingress

// catalogRoutes registers the SKU, address, cart and preview routes.
func (s *Server) catalogRoutes() {}
