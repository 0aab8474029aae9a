// Package migrations holds the database schema as versioned SQL files,
// embedded in the binary and applied with pressly/goose.
package migrations

import "embed"

// FS holds the NNNN_name.sql migrations.
//
//go:embed *.sql
var FS embed.FS
