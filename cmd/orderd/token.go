package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/flashsale/orderd/pkg/auth"
)

// runToken prints a JWT for --sub, signed with JWT_SECRET, for development
// and load tests.
func runToken(_ context.Context, cfg *Config, args []string, stdout io.Writer, _ *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("token takes no arguments, got %q (see orderd token --help)", args)}
	}
	var opts []auth.MintOption // what an HS256 api with the same JWT_ISSUER and JWT_AUDIENCE checks
	if cfg.JWTIssuer != "" {
		opts = append(opts, auth.WithIssuer(cfg.JWTIssuer))
	}
	if cfg.JWTAudience != "" {
		opts = append(opts, auth.WithAudience(cfg.JWTAudience))
	}
	tok, err := auth.Mint([]byte(cfg.JWTSecret), cfg.TokenSub, cfg.TokenAdmin, cfg.TokenTTL, opts...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
