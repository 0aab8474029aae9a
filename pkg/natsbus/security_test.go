package natsbus_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/flashsale/orderd/pkg/natsbus"
)

// startServer starts a nats-server with opts on a free loopback port and
// returns its URL.
func startServer(t *testing.T, opts *server.Options, setup func(*server.Server)) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// writeFile writes data to name in a temporary directory of t.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// connectWith connects with sec's options and checks a round trip.
func connectWith(t *testing.T, url string, sec natsbus.Security) error {
	t.Helper()
	opts, err := sec.Options()
	if err != nil {
		return err
	}
	nc, err := natsbus.Connect(url, "security-test", slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("ping")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ping", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	return nil
}

// NATS_NKEY_SEED: a user known to the server by its public nkey connects
// with the seed in a file; without it the server refuses.
func TestConnectWithNKeySeed(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	url := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}}, nil)

	if err := connectWith(t, url, natsbus.Security{NKeySeedFile: writeFile(t, "user.nk", seed)}); err != nil {
		t.Errorf("connect with the nkey seed: %v", err)
	}
	if err := connectWith(t, url, natsbus.Security{}); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("connect without the seed = %v, want an authorization violation", err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	if err := connectWith(t, url, natsbus.Security{NKeySeedFile: writeFile(t, "other.nk", otherSeed)}); err == nil {
		t.Error("connected with an unknown nkey")
	}
	if err := connectWith(t, url, natsbus.Security{NKeySeedFile: filepath.Join(t.TempDir(), "missing.nk")}); err == nil {
		t.Error("connected with a missing seed file")
	}
}

// NATS_CREDS: a server in operator mode (decentralized JWT auth) takes a
// user whose creds file holds a JWT signed by a trusted account.
func TestConnectWithCredsFile(t *testing.T) {
	operator, _ := nkeys.CreateOperator()
	opPub, _ := operator.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	if _, err := oc.Encode(operator); err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	accPub, _ := account.PublicKey()
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	url := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: &server.MemAccResolver{}},
		func(s *server.Server) {
			if err := s.AccountResolver().Store(accPub, accJWT); err != nil {
				t.Fatal(err)
			}
		})

	if err := connectWith(t, url, natsbus.Security{CredsFile: writeFile(t, "user.creds", creds)}); err != nil {
		t.Errorf("connect with the creds file: %v", err)
	}
	if err := connectWith(t, url, natsbus.Security{}); err == nil {
		t.Error("connected to an operator-mode server without credentials")
	}
}

// Two identities, or half a client certificate, are refused before any
// connection.
func TestSecurityOptionsRefuseAmbiguity(t *testing.T) {
	for _, s := range []natsbus.Security{
		{CredsFile: "a.creds", NKeySeedFile: "a.nk"},
		{TLSCertFile: "cert.pem"},
		{TLSKeyFile: "key.pem"},
	} {
		if _, err := s.Options(); err == nil {
			t.Errorf("Options(%+v) = nil error", s)
		}
	}
}
