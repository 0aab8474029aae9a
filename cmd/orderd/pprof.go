//go:build pprof

package main

// Built with -tags pprof, orderd serves net/http/pprof on PPROF_ADDR
// (default 127.0.0.1:6060), for profiling a benchmark run:
//
//	go build -tags pprof -o bin/orderd ./cmd/orderd
//	go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=10

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go func() {
		slog.Info("pprof listening", "addr", addr)
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Error("pprof", "err", err)
		}
	}()
}
