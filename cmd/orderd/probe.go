package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
)

// runProbe GETs --url and succeeds if it answers 2xx: the container
// healthcheck of an image that has no curl (deploy/Dockerfile).
func runProbe(ctx context.Context, cfg *Config, args []string, stdout io.Writer, _ *slog.Logger) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("probe takes no arguments, got %q (see orderd probe --help)", args)}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.ProbeURL, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("probe: %s answered %s: %s", cfg.ProbeURL, resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s %s\n", resp.Status, body)
	return nil
}
