// Package e2e holds the end-to-end tests of the checkout: real HTTP clients
// against the real services, on a fresh PostgreSQL database, a Redis key
// prefix and a NATS JetStream server of each test's own.
//
// Two shapes of test live here:
//
//   - in-process: the ingress wired as cmd/orderd wires it (PostgreSQL and
//     Redis stores, the group-commit publisher, the status hub) behind an
//     httptest server, and worker.New + Run beside it;
//   - out-of-process: the orderd binary, built once per test run, started
//     as `orderd api` and several `orderd worker` processes, some of which
//     the test kills with SIGKILL.
//
// Each test checks what a buyer sees over HTTP (every 202 reaches a final
// decision, the right number are confirmed), what PostgreSQL holds (no
// oversell, no duplicate order), and what downstream consumers read on
// ORDER_EVENTS (exactly one decision event per order, deduplicated on the
// CloudEvent id as the spec tells consumers to).
//
// The tests need the local PostgreSQL and Redis (scripts/deps.sh starts
// them) and run with the rest: go test -race ./e2e/
package e2e
