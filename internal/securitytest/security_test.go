package securitytest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// pki is a throwaway CA and the certificates it signed, as PEM files.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
	serial int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "baton test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{dir: t.TempDir(), ca: ca, caKey: key, serial: 1}
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
	return path
}

// issue signs a certificate for cn, usable by a server on loopback and as a
// client certificate, and returns its TLS files.
func (p *pki) issue(t *testing.T, cn string) transport.TLSInfo {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return transport.TLSInfo{
		CertFile:      p.write(t, cn+".pem", "CERTIFICATE", der),
		KeyFile:       p.write(t, cn+"-key.pem", "EC PRIVATE KEY", keyDER),
		TrustedCAFile: p.caFile,
	}
}

// startSecureEtcd runs an embedded etcd that serves clients only over TLS
// and requires a client certificate signed by the test CA.
func startSecureEtcd(t *testing.T, p *pki) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "secure"
	cfg.Dir = t.TempDir()
	client := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	server := p.issue(t, "etcd-server")
	server.ClientCertAuth = true
	cfg.ClientTLSInfo = server
	cfg.ElectionMs, cfg.TickMs = 500, 50
	cfg.UnsafeNoFsync = true
	cfg.BcryptCost = uint(bcrypt.MinCost) // password checks in microseconds, not a second under -race
	cfg.GRPCKeepAliveMinTime = time.Second
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd stopped while starting: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("etcd did not start")
	}
	return "https://" + e.Clients[0].Addr().String()
}

// connect returns a TLS client authenticated as user (no user: none).
func connect(t *testing.T, endpoint string, tlsInfo transport.TLSInfo, user, password string) (*clientv3.Client, error) {
	t.Helper()
	tc, err := tlsInfo.ClientConfig()
	require.NoError(t, err)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tc,
		Username:    user,
		Password:    password,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli, nil
}

// grantGroup creates the role and user of one group, as the README's
// etcdctl lines do:
//
//	etcdctl role add baton-<group>
//	etcdctl role grant-permission baton-<group> --prefix=true readwrite /baton/<group>/
//	etcdctl user add baton-<group> --new-user-password=...
//	etcdctl user grant-role baton-<group> baton-<group>
func grantGroup(ctx context.Context, t *testing.T, root *clientv3.Client, group, password string) {
	t.Helper()
	name := "baton-" + group
	prefix := "/baton/" + group + "/"
	_, err := root.RoleAdd(ctx, name)
	require.NoError(t, err)
	_, err = root.RoleGrantPermission(ctx, name, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
	require.NoError(t, err)
	_, err = root.UserAdd(ctx, name, password)
	require.NoError(t, err)
	_, err = root.UserGrantRole(ctx, name, name)
	require.NoError(t, err)
}

// tracker records which member runs which sync, and every checkpoint error.
type tracker struct {
	mu      sync.Mutex
	running map[string]string
	errs    []error
}

func (tr *tracker) handler(member string) coordinator.Handler {
	return coordinator.HandlerFuncs{
		Assign: func(ctx context.Context, c *assignment.Claim) error {
			// A fenced write under the group's prefix: allowed.
			err := c.SaveCheckpoint(ctx, []byte("from "+member))
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if err != nil {
				tr.errs = append(tr.errs, err)
			}
			tr.running[c.ID()] = member
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if tr.running[c.ID()] == member {
				delete(tr.running, c.ID())
			}
		},
	}
}

func (tr *tracker) snapshot() (map[string]string, []error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string]string{}
	for k, v := range tr.running {
		out[k] = v
	}
	return out, append([]error(nil), tr.errs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !etcdtest.WaitUntil(20*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestTLSAndPerGroupRoles(t *testing.T) {
	p := newPKI(t)
	endpoint := startSecureEtcd(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Before auth is on: the root user, one role and user per group, then
	// auth enable. (etcdctl user add root; user grant-role root root;
	// ...; auth enable.)
	// Its certificate's common name is no user: with --client-cert-auth,
	// etcd takes a certificate's CN as the user name of requests that carry
	// no password token.
	setup, err := connect(t, endpoint, p.issue(t, "setup"), "", "")
	require.NoError(t, err)
	_, err = setup.UserAdd(ctx, "root", "root-secret")
	require.NoError(t, err)
	_, err = setup.UserGrantRole(ctx, "root", "root")
	require.NoError(t, err)
	grantGroup(ctx, t, setup, "a", "secret-a")
	grantGroup(ctx, t, setup, "b", "secret-b")
	_, err = setup.AuthEnable(ctx)
	require.NoError(t, err)

	// Without credentials, or with a wrong password, nothing is served.
	_, err = setup.Put(ctx, "/baton/a/x", "v")
	require.Error(t, err, "anonymous write after auth enable")
	_, err = connect(t, endpoint, p.issue(t, "baton-a-wrong"), "baton-a", "wrong")
	require.ErrorIs(t, err, rpctypes.ErrAuthFailed)
	// Without a client certificate the TLS handshake fails.
	noCert, err := connect(t, endpoint, transport.TLSInfo{TrustedCAFile: p.caFile}, "baton-a", "secret-a")
	if err == nil {
		short, c := context.WithTimeout(ctx, 2*time.Second)
		_, err = noCert.Get(short, "/baton/a/x")
		c()
	}
	require.Error(t, err, "a client without a certificate is refused")

	// Group a: two members and an admin, all as user baton-a over TLS.
	certA := p.issue(t, "baton-a")
	// The certificate alone authenticates as its CN: no password needed,
	// and no more rights than that user has.
	byCert, err := connect(t, endpoint, certA, "", "")
	require.NoError(t, err)
	_, err = byCert.Get(ctx, "/baton/a/syncs/", clientv3.WithPrefix())
	require.NoError(t, err, "CN baton-a reads group a")
	_, err = byCert.Get(ctx, "/baton/b/syncs/", clientv3.WithPrefix())
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied, "CN baton-a cannot read group b")
	clientA := func() *clientv3.Client {
		cli, err := connect(t, endpoint, certA, "baton-a", "secret-a")
		require.NoError(t, err)
		return cli
	}
	adminA := clientA()
	storeA := coordinator.NewSyncStore(adminA, "a")
	for _, id := range []string{"s1", "s2", "s3", "s4"} {
		require.NoError(t, storeA.Put(ctx, assignment.Sync{ID: id, Spec: []byte(`{"n":1}`)}))
	}
	listed, err := storeA.List(ctx)
	require.NoError(t, err)
	require.Len(t, listed, 4)

	tr := &tracker{running: map[string]string{}}
	var members []*coordinator.Coordinator
	for _, id := range []string{"a1", "a2"} {
		co, err := coordinator.New(clientA(), "a", tr.handler(id), coordinator.WithMemberID(id),
			coordinator.WithTTL(time.Second), coordinator.WithSettle(50*time.Millisecond))
		require.NoError(t, err)
		require.NoError(t, co.Join(ctx))
		members = append(members, co)
	}
	waitFor(t, "group a settled", func() bool {
		st, err := coordinator.Describe(ctx, adminA, "a")
		running, _ := tr.snapshot()
		if err != nil || st.Leader == "" || len(st.Members) != 2 || len(st.Syncs) != 4 || st.Pending != 0 || len(running) != 4 {
			return false
		}
		// Balanced: a2 may join after a1 took everything.
		return st.Members[0].Owned == 2 && st.Members[1].Owned == 2 && len(uniq(running)) == 2
	})
	running, errs := tr.snapshot()
	require.Empty(t, errs, "fenced checkpoints under the group's prefix")
	require.ElementsMatch(t, []string{"a1", "a2"}, uniq(running))

	// Group b: one member, as user baton-b.
	certB := p.issue(t, "baton-b")
	cliB, err := connect(t, endpoint, certB, "baton-b", "secret-b")
	require.NoError(t, err)
	require.NoError(t, coordinator.NewSyncStore(cliB, "b").Put(ctx, assignment.Sync{ID: "only-b"}))
	trB := &tracker{running: map[string]string{}}
	b1, err := coordinator.New(cliB, "b", trB.handler("b1"), coordinator.WithMemberID("b1"), coordinator.WithTTL(time.Second))
	require.NoError(t, err)
	require.NoError(t, b1.Join(ctx))
	waitFor(t, "group b runs its sync", func() bool { r, _ := trB.snapshot(); return r["only-b"] == "b1" })

	// Group a's user cannot touch group b: every call fails at once with
	// a permission error that names the operation, and nothing else stops.
	crossA := clientA()
	denied := func(err error) {
		t.Helper()
		require.Error(t, err)
		require.ErrorIs(t, err, rpctypes.ErrPermissionDenied, "error: %v", err)
		t.Logf("as expected: %v", err)
	}
	storeB := coordinator.NewSyncStore(crossA, "b")
	denied(storeB.Put(ctx, assignment.Sync{ID: "intruder"}))
	denied(storeB.Delete(ctx, "only-b"))
	_, err = storeB.List(ctx)
	denied(err)
	_, err = coordinator.Describe(ctx, crossA, "b")
	denied(err)
	intruder, err := coordinator.New(crossA, "b", tr.handler("intruder"), coordinator.WithMemberID("intruder"), coordinator.WithTTL(time.Second))
	require.NoError(t, err)
	joinCtx, joinCancel := context.WithTimeout(ctx, 10*time.Second)
	start := time.Now()
	err = intruder.Join(joinCtx)
	joinCancel()
	denied(err)
	require.Less(t, time.Since(start), 5*time.Second, "Join fails at once, it does not wait for its ctx")
	require.ErrorIs(t, intruder.Leave(ctx), coordinator.ErrNotJoined)
	// And the other way round, directly on the keys.
	_, err = cliB.Get(ctx, "/baton/a/syncs/s1")
	denied(err)
	_, err = cliB.Put(ctx, "/baton/a/owners/s1", "b1")
	denied(err)
	// A key just outside the prefix (a group whose name extends "a").
	_, err = adminA.Put(ctx, "/baton/ab/syncs/x", "{}")
	denied(err)

	// Both groups are unharmed.
	waitFor(t, "b still runs", func() bool { r, _ := trB.snapshot(); return r["only-b"] == "b1" })
	stB, err := coordinator.Describe(ctx, cliB, "b")
	require.NoError(t, err)
	require.Len(t, stB.Syncs, 1)
	require.Equal(t, "b1", stB.Syncs[0].Owner)

	// A member leaves: its syncs move, its lease is revoked (allowed: every
	// key on it is under the group's prefix), and the other member runs all.
	require.NoError(t, members[1].Leave(ctx))
	waitFor(t, "a1 runs all of group a", func() bool {
		st, err := coordinator.Describe(ctx, adminA, "a")
		running, _ := tr.snapshot()
		return err == nil && len(st.Members) == 1 && st.Pending == 0 && len(running) == 4 && uniq(running)[0] == "a1"
	})
	_, errs = tr.snapshot()
	require.Empty(t, errs)
	require.NoError(t, storeA.Delete(ctx, "s4"))
	require.NoError(t, members[0].Leave(ctx))
	require.NoError(t, b1.Leave(ctx))
	require.NoError(t, members[0].Err())
}

func uniq(m map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range m {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
