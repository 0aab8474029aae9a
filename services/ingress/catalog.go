package ingress

// catalogRoutes registers the SKU, address, cart and preview routes.
func (s *Server) catalogRoutes() {
	s.handle("POST /v1/skus", s.adminWriter(s.createSKU))
	s.handle("GET /v1/skus", s.user(s.listSKUs))
	s.handle("GET /v1/skus/{id}", s.user(s.getSKU))
	s.adminSKURoutes()

	s.handle("POST /v1/addresses", s.writer(s.createAddress))
	s.handle("GET /v1/addresses", s.user(s.listAddresses))
	s.handle("GET /v1/addresses/{id}", s.user(s.getAddress))
	s.handle("DELETE /v1/addresses/{id}", s.writer(s.deleteAddress))

	s.handle("GET /v1/cart", s.user(s.getCart))
	s.handle("PUT /v1/cart/items/{sku_id}", s.writer(s.putCartItem))
	s.handle("DELETE /v1/cart/items/{sku_id}", s.writer(s.deleteCartItem))
	s.handle("DELETE /v1/cart", s.writer(s.clearCart))

	s.handle("POST /v1/checkout/preview", s.writer(s.preview))
}
