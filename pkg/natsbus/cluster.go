package natsbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterNode is one nats-server of a JetStream cluster on loopback ports:
// what the configuration file of ClusterNodeConfig says.
type ClusterNode struct {
	Name        string // server_name, as StreamInfo.Cluster.Leader reports it
	ClientPort  int
	ClusterPort int
	HTTPPort    int    // monitoring (/healthz, /jsz); 0: none
	StoreDir    string // JetStream's file store of this node
}

// ClientURL is the node's nats:// URL.
func (n ClusterNode) ClientURL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.ClientPort) }

// ClusterURLs is the comma-separated list of the nodes' client URLs, as
// NATS_URL takes it: a client connects to any of them and fails over to the
// others.
func ClusterURLs(nodes []ClusterNode) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.ClientURL()
	}
	return strings.Join(urls, ",")
}

// NewClusterNodes names n nodes node-1..node-n with free loopback ports and
// store directories under dir (dir/node-i). A port found free may be taken
// by another process before the server binds it; that is a start failure,
// not a silent clash.
func NewClusterNodes(n int, dir string) ([]ClusterNode, error) {
	// Every port at once, all held until the last is found: ports looked
	// for one node at a time could hand a port just released by one node
	// to the next (a node's client port became another's monitor port).
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	nodes := make([]ClusterNode, n)
	for i := range nodes {
		p := ports[3*i:]
		name := "node-" + strconv.Itoa(i+1)
		nodes[i] = ClusterNode{Name: name, ClientPort: p[0], ClusterPort: p[1], HTTPPort: p[2], StoreDir: filepath.Join(dir, name)}
	}
	return nodes, nil
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// ClusterNodeConfig is the nats-server configuration file of node self of
// the cluster nodes (name cluster): JetStream in self.StoreDir, routes to
// every node. syncAlways sets sync_interval: always (fsync before every
// acknowledgement, the setting orderd wants on every node); false leaves
// the server's lazy default (flush every two minutes).
func ClusterNodeConfig(cluster string, self ClusterNode, nodes []ClusterNode, syncAlways bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"127.0.0.1:%d\"\n", self.Name, self.ClientPort)
	if self.HTTPPort != 0 {
		fmt.Fprintf(&b, "http: \"127.0.0.1:%d\"\n", self.HTTPPort)
	}
	b.WriteString("max_payload: 8MB\n")
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n", self.StoreDir)
	if syncAlways {
		b.WriteString("  sync_interval: always\n")
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", cluster, self.ClusterPort)
	for _, n := range nodes {
		fmt.Fprintf(&b, "    \"nats-route://127.0.0.1:%d\"\n", n.ClusterPort)
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// ClusterNodeOptions are the same settings as ClusterNodeConfig, for a
// server started in this process (StartCluster).
func ClusterNodeOptions(cluster string, self ClusterNode, nodes []ClusterNode, syncAlways bool) *server.Options {
	routes := make([]string, len(nodes))
	for i, n := range nodes {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(n.ClusterPort)
	}
	return &server.Options{
		ServerName: self.Name,
		Host:       "127.0.0.1",
		Port:       self.ClientPort,
		HTTPHost:   "127.0.0.1",
		HTTPPort:   self.HTTPPort,
		JetStream:  true,
		StoreDir:   self.StoreDir,
		SyncAlways: syncAlways,
		MaxPayload: 8 << 20,
		NoSigs:     true,
		NoLog:      true,
		Cluster:    server.ClusterOpts{Name: cluster, Host: "127.0.0.1", Port: self.ClusterPort},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
	}
}

// StartCluster starts a JetStream cluster of n servers in this process, on
// loopback ports with stores under dir, and waits until it has a meta
// leader. For benchmarks and tests: a deployment runs one nats-server
// process per host (ClusterNodeConfig is its configuration). The caller
// shuts the servers down (ShutdownAll).
func StartCluster(n int, dir string, syncAlways bool) ([]*server.Server, []ClusterNode, error) {
	nodes, err := NewClusterNodes(n, dir)
	if err != nil {
		return nil, nil, err
	}
	var servers []*server.Server
	for _, node := range nodes {
		s, err := server.NewServer(ClusterNodeOptions("orderd-bench", node, nodes, syncAlways))
		if err != nil {
			ShutdownAll(servers)
			return nil, nil, fmt.Errorf("cluster node %s: %w", node.Name, err)
		}
		go s.Start()
		servers = append(servers, s)
	}
	for _, s := range servers {
		if !s.ReadyForConnections(30 * time.Second) {
			ShutdownAll(servers)
			return nil, nil, fmt.Errorf("cluster node %s: not ready after 30s", s.Name())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !hasMetaLeader(servers) {
		if time.Now().After(deadline) {
			ShutdownAll(servers)
			return nil, nil, errors.New("cluster: no JetStream meta leader after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return servers, nodes, nil
}

func hasMetaLeader(servers []*server.Server) bool {
	for _, s := range servers {
		if s.JetStreamIsLeader() {
			return true
		}
	}
	return false
}

// ShutdownAll shuts the servers down and waits for them.
func ShutdownAll(servers []*server.Server) {
	for _, s := range servers {
		s.Shutdown()
	}
	for _, s := range servers {
		s.WaitForShutdown()
	}
}

// EnsureStreamsRetry is EnsureStreams retried until it succeeds or ctx
// ends: a cluster that just formed may refuse a replicated stream for a
// moment (its meta leader does not know every peer yet).
func EnsureStreamsRetry(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := EnsureStreams(actx, js, c)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
