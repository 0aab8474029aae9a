// Command orderd is the flash-sale order processor: an HTTP ingress that
// publishes checkout commands to NATS JetStream, partition workers that apply
// them to PostgreSQL in batches, and the outbox relay that publishes their
// events. One binary, several roles:
//
//	orderd serve     ingress + workers + relay in one process (the default)
//	orderd api       ingress only
//	orderd worker    workers + relay only
//	orderd migrate   up | down | status | wait
//	orderd token     --sub USER [--admin] [--ttl 24h]: mint a development JWT
//	orderd probe     [--url URL]: exit 0 if URL answers 2xx (container healthcheck)
//	orderd pay       --order ID: send a signed payment webhook for an order (development)
//	orderd reconcile stock counters against orders and events; exit 1 on drift
//	orderd version   the module version and VCS revision (also --version)
//
// Every option is a flag and an environment variable; `orderd CMD --help`
// lists them with their defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "orderd: %v\n", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// command is one subcommand.
type command struct {
	role     Role
	synopsis string
	run      func(ctx context.Context, cfg *Config, args []string, stdout io.Writer, log *slog.Logger) error
}

var commands = []command{
	{RoleServe, "usage: orderd serve [options]\n\nRuns the ingress, the partition workers and the outbox relay in one process.\nWith NATS_URL empty it starts an embedded NATS server with JetStream.", serveRole(RoleServe)},
	{RoleAPI, "usage: orderd api [options]\n\nRuns the HTTP ingress only, against the NATS server at NATS_URL.", serveRole(RoleAPI)},
	{RoleWorker, "usage: orderd worker [options]\n\nRuns the partition workers and the outbox relay only, against the NATS server at NATS_URL.", serveRole(RoleWorker)},
	{RoleMigrate, "usage: orderd migrate [options] up|down|status|wait\n\nApplies (up), rolls back one (down) or lists (status) the database migrations,\nor waits until another process has applied them all (wait; reads only).", runMigrate},
	{RoleToken, "usage: orderd token [options] --sub USER\n\nPrints a development JWT for USER, signed with JWT_SECRET.", runToken},
	{RoleProbe, "usage: orderd probe [options]\n\nGETs --url and exits 0 if it answers 2xx: a container healthcheck.", runProbe},
	{RoleReconcile, "usage: orderd reconcile [options]\n\nPrints, per SKU, what the stock counter says was taken (initial + restocked - stock),\nwhat confirmed and paid orders hold, what undecided multi-partition orders reserve,\nand what the order events relayed to ORDER_EVENTS hold (counted by the relay as it\npublishes them); exits 1 if any SKU drifts.", runReconcile},
}

// serveRole returns the run function of a long-running role.
func serveRole(role Role) func(context.Context, *Config, []string, io.Writer, *slog.Logger) error {
	return func(ctx context.Context, cfg *Config, args []string, _ io.Writer, log *slog.Logger) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("%s takes no arguments, got %q (see orderd %s --help)", role, args, role)}
		}
		return runServe(ctx, cfg, role, log)
	}
}

const mainUsage = `orderd: the flash-sale order processor.

usage: orderd <command> [options]

Commands:
  serve     ingress + workers + outbox relay in one process (the default)
  api       HTTP ingress only
  worker    partition workers + outbox relay only
  migrate   up | down | status | wait: the database migrations (wait: until another process applied them)
  token     --sub USER [--admin] [--ttl 24h]: print a development JWT
  probe     [--url http://127.0.0.1:8080/readyz]: exit 0 if the URL answers 2xx
  pay       --order ID [--url URL] [--amount N --currency EUR] [--provider-ref REF]: send a signed payment webhook
  reconcile compare stock counters with orders and events; exit 1 on drift
  version   the module version and VCS revision of this binary (also --version)
  help      this text; "orderd help CMD" or "orderd CMD --help" lists CMD's options

Every option is a flag and an environment variable (the flag wins).
`

// run runs the subcommand named by args[0] (serve when there is none or the
// first argument is a flag) until it ends or ctx is cancelled (SIGINT,
// SIGTERM). Logs are JSON lines on stderr; a command's output (a token, the
// migration status, help) goes to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	name := "serve"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" ||
		args[0] == "-version" || args[0] == "--version" || args[0] == "" || args[0][0] != '-') {
		name, args = args[0], args[1:]
	}
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 0 {
			return run(ctx, []string{args[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, mainUsage)
		return nil
	case "pay":
		return runPay(ctx, args, stdout)
	case "version", "-version", "--version":
		return runVersion(args, stdout)
	}
	var cmd *command
	for i := range commands {
		if string(commands[i].role) == name {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		return usageError{fmt.Errorf("unknown command %q (see orderd help)", name)}
	}
	cfg, rest, err := parseConfig(cmd.role, cmd.synopsis, args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := cfg.Validate(cmd.role); err != nil {
		return err
	}
	level, _ := parseLevel(cfg.LogLevel) // checked by Validate
	log := newLogger(stderr, level)
	if cfg.Dev {
		log.Warn("development mode (ORDERD_DEV, --dev): the repository's development secrets are accepted; never in production")
	}
	return cmd.run(ctx, cfg, rest, stdout, log)
}

// newLogger returns the JSON logger on w. Durations are written as text
// ("1.5s"), not as nanoseconds.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		},
	}))
}
