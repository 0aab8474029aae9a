package redisstore

import "time"

// SetSoldOutTTL sets the time to live of the markers s writes, so that a
// test need not wait SoldOutTTL.
func (s *Store) SetSoldOutTTL(d time.Duration) { s.soldOutTTL = d }
