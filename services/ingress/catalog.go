package ingress

// catalogRoutes registers the SKU, address, cart and preview routes.
func (s *Server) catalogRoutes() {
	s.handle("POST /v1/skus", s.admin(s.createSKU))
	s.handle("GET /v1/skus", s.user(s.listSKUs))
	s.handle("GET /v1/skus/{id}", s.user(s.getSKU))
	s.adminSKURoutes()

	s.handle("POST /v1/addresses", s.user(s.createAddress))
	s.handle("GET /v1/addresses", s.user(s.listAddresses))
	s.handle("GET /v1/addresses/{id}", s.user(s.getAddress))
	s.handle("DELETE /v1/addresses/{id}", s.user(s.deleteAddress))

	s.handle("GET /v1/cart", s.user(s.getCart))
	s.handle("PUT /v1/cart/items/{sku_id}", s.user(s.putCartItem))
	s.handle("DELETE /v1/cart/items/{sku_id}", s.user(s.deleteCartItem))
	s.handle("DELETE /v1/cart", s.user(s.clearCart))

	s.handle("POST /v1/checkout/preview", s.user(s.preview))
}
