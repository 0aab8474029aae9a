package order

import (
	"hash/fnv"

	"github.com/google/uuid"
)

// Partition returns the partition of a SKU among n: FNV-1a of the id's 16
// bytes, modulo n. It depends only on the id and n, so it is stable across
// restarts and processes. n must be positive.
func Partition(sku uuid.UUID, n int) int {
	h := fnv.New32a()
	h.Write(sku[:])
	return int(h.Sum32() % uint32(n))
}
