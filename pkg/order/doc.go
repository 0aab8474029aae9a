// Package order is the domain of the flash-sale order processor: SKUs,
// addresses, orders and their lines, the status machine, money, the commands
// that flow through JetStream, the CloudEvents the service emits, and the
// rules that decide an order. It imports only the standard library and
// google/uuid, and is tested without any database.
package order
