package redisstore

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/batch"
)

// Auto-pipelining: the commands of the checkout's and the status reads'
// hot paths, issued by many requests at once, travel to Redis together in
// one pipeline (group commit, pkg/batch) instead of one round trip each.
// Redis answers a pipeline of a hundred commands for little more than the
// cost of one, and the ingress makes one write and one read system call per
// batch instead of per command. A lone request is sent at once.

// pipeRequest adds one request's commands to a pipeline.
type pipeRequest func(redis.Pipeliner)

// pipeBatchMax bounds the requests one pipeline carries, and pipeParallel
// the pipelines in flight at once.
const (
	pipeBatchMax = 256
	pipeParallel = 4
)

func newPipeBatcher(rdb *redis.Client) *batch.Batcher[pipeRequest, struct{}] {
	return batch.New(func(ctx context.Context, reqs []pipeRequest) ([]struct{}, error) {
		p := rdb.Pipeline()
		for _, add := range reqs {
			add(p)
		}
		// Each request reads its own commands' results and errors (a
		// failed connection sets the error of every command).
		_, _ = p.Exec(ctx)
		return make([]struct{}, len(reqs)), nil
	}, batch.Config{Max: pipeBatchMax, Parallel: pipeParallel})
}

// pipelined runs add's commands in the next shared pipeline and returns
// when they are answered; the caller then reads each command's result. An
// error means the caller's ctx ended first.
func (s *Store) pipelined(ctx context.Context, add pipeRequest) error {
	if s.pipe == nil {
		p := s.rdb.Pipeline()
		add(p)
		_, _ = p.Exec(ctx)
		return nil
	}
	_, err := s.pipe.Do(ctx, add)
	return err
}

// evalPiped runs script in the next shared pipeline by its SHA, falling
// back to sending it whole when the server does not know it (after a
// restart).
func (s *Store) evalPiped(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	if err := s.pipelined(ctx, func(p redis.Pipeliner) { cmd = script.EvalSha(ctx, p, keys, args...) }); err != nil {
		c := redis.NewCmd(ctx)
		c.SetErr(err)
		return c
	}
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		return script.Run(ctx, s.rdb, keys, args...)
	}
	return cmd
}
