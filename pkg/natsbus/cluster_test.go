package natsbus_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/natsbus"
)

// TestClusterNodeConfigMatchesOptions: the configuration file an external
// nats-server is given (the e2e cluster test) says what the in-process
// options say (benchlimits durability), sync_interval included.
func TestClusterNodeConfigMatchesOptions(t *testing.T) {
	dir := t.TempDir()
	nodes, err := natsbus.NewClusterNodes(3, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, sync := range []bool{true, false} {
		conf := filepath.Join(dir, "node.conf")
		if err := os.WriteFile(conf, []byte(natsbus.ClusterNodeConfig("c", nodes[1], nodes, sync)), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("sync %t: %v", sync, err)
		}
		want := natsbus.ClusterNodeOptions("c", nodes[1], nodes, sync)
		if got.ServerName != want.ServerName || got.Host != want.Host || got.Port != want.Port ||
			got.HTTPPort != want.HTTPPort || !got.JetStream || got.StoreDir != want.StoreDir ||
			got.SyncAlways != want.SyncAlways || got.Cluster.Name != want.Cluster.Name ||
			got.Cluster.Port != want.Cluster.Port || len(got.Routes) != len(want.Routes) || got.MaxPayload != want.MaxPayload {
			t.Errorf("sync %t: the file gives %+v\nthe options are %+v", sync, got, want)
		}
	}
}

// TestClusterReplicatedStreams starts a three-node cluster in this process,
// creates the streams with three replicas, and publishes a command through
// a connection to every node's URL.
func TestClusterReplicatedStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	servers, nodes, err := natsbus.StartCluster(3, t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { natsbus.ShutdownAll(servers) })
	nc, err := nats.Connect(natsbus.ClusterURLs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := natsbus.EnsureStreamsRetry(ctx, js, natsbus.StreamConfig{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, natsbus.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "orders.cmd.0", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 || info.State.Msgs != 1 {
		t.Errorf("ORDER_CMDS: %d replicas, cluster %+v, %d messages; want 3 replicas, a leader and 2 followers, 1 message",
			info.Config.Replicas, info.Cluster, info.State.Msgs)
	}
}
