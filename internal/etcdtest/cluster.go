package etcdtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/tests/v3/framework/integration"
	"go.uber.org/zap"
)

// ClientDialTimeout is the dial timeout of the clients this package makes.
const ClientDialTimeout = 2 * time.Second

// memberSeq numbers members across all clusters of the process, so the
// members of clusters that share a working directory (a test and its
// subtests) get distinct socket names.
var memberSeq atomic.Int64

// memberNumBase makes every member number seven digits long.
const memberNumBase = 1_000_000

// Cluster is an in-process etcd cluster whose clients reach each member
// through a bridge that can drop, pause or blackhole their connections.
// Its methods must be called from the test's goroutine.
type Cluster struct {
	t     testing.TB
	clus  *integration.Cluster
	mu    sync.Mutex
	holed []bool
}

// NewCluster starts a cluster of size members and waits until it has a
// leader. It is terminated when t's test ends. See the package doc for
// what a test that uses it must not do.
func NewCluster(t testing.TB, size int) *Cluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("etcdtest: cluster size %d, want at least 1", size)
	}
	qt := quiet(t)
	enterTestContext(t, qt)

	cfg := &integration.ClusterConfig{
		Size:      size,
		UseBridge: true,
		// Let clients send keep-alive pings as often as they like; the
		// gRPC default (one per 5 minutes without streams) would make the
		// server hang up on a client that pings every second.
		GRPCKeepAliveMinTime: 10 * time.Millisecond,
	}
	// This is integration.NewCluster, with member names ("m" and the
	// member number) unique in the process. Each member listens on
	// "localhost:<name>" and its bridge on "localhost:<name>0": names of one
	// width keep one member's bridge from taking another member's socket
	// (m1's bridge would be m10's socket).
	clus := &integration.Cluster{Cfg: cfg}
	for range size {
		clus.LastMemberNum = memberNumBase + int(memberSeq.Add(1))
		clus.Members = append(clus.Members, clus.MustNewMember(qt))
	}
	if err := fillInitialCluster(clus); err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(func() { clus.Terminate(qt) })
	clus.Launch(qt)

	c := &Cluster{t: qt, clus: clus, holed: make([]bool, size)}
	c.WaitLeader()
	return c
}

// fillInitialCluster tells every member about all peers, as the
// unexported integration.Cluster.fillClusterForMembers does.
func fillInitialCluster(clus *integration.Cluster) error {
	var peers []string
	for _, m := range clus.Members {
		scheme := integration.SchemeFromTLSInfo(m.PeerTLSInfo)
		for _, l := range m.PeerListeners {
			peers = append(peers, fmt.Sprintf("%s=%s://%s", m.Name, scheme, l.Addr().String()))
		}
	}
	for _, m := range clus.Members {
		var err error
		if m.InitialPeerURLsMap, err = types.NewURLsMap(strings.Join(peers, ",")); err != nil {
			return fmt.Errorf("initial cluster: %w", err)
		}
	}
	return nil
}

// testContext tracks which test entered the integration framework's test
// context: it may be entered once per process at a time.
var testContext struct {
	sync.Mutex
	owner string
	depth int
}

// enterTestContext runs integration.BeforeTest for t unless t or one of its
// parents already did. BeforeTest switches the working directory to a
// temporary one (the framework names its unix sockets relative to it) and
// turns on etcd's storage verification; both are undone when t ends.
// BeforeTest's own goroutine leak check is off: it would skip a test when
// any goroutine is already running, and goleak.VerifyTestMain covers it.
func enterTestContext(t, qt testing.TB) {
	t.Helper()
	testContext.Lock()
	defer testContext.Unlock()
	name := t.Name()
	if testContext.depth > 0 {
		if name != testContext.owner && !strings.HasPrefix(name, testContext.owner+"/") {
			t.Fatalf("etcdtest: %s is using an in-process cluster; tests using clusters must not run in parallel", testContext.owner)
		}
		testContext.depth++
		t.Cleanup(leaveTestContext)
		return
	}
	integration.BeforeTest(qt, integration.WithoutGoLeakDetection(), integration.WithoutSkipInShort())
	testContext.owner = name
	testContext.depth = 1
	t.Cleanup(leaveTestContext)
}

func leaveTestContext() {
	testContext.Lock()
	defer testContext.Unlock()
	testContext.depth--
}

// Size is the number of members.
func (c *Cluster) Size() int { return len(c.clus.Members) }

// Member gives direct access to member i, for what the other methods do not
// cover (its server, its raft handler, Pause/Resume of its peer traffic).
func (c *Cluster) Member(i int) *integration.Member { return c.clus.Members[i] }

// Integration gives direct access to the underlying cluster.
func (c *Cluster) Integration() *integration.Cluster { return c.clus }

// Endpoint is member i's client URL, through its bridge.
func (c *Cluster) Endpoint(i int) string { return c.clus.Members[i].GRPCURL }

// Endpoints are the client URLs of all members, through their bridges. They
// name unix sockets relative to the test's working directory.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, c.Size())
	for i := range eps {
		eps[i] = c.Endpoint(i)
	}
	return eps
}

// Client returns a new client to all members, closed when t ends. Closing it
// earlier is harmless. A blackholed member stalls the requests this client
// sends to it; use [Cluster.ClientTo] to cut a client off cleanly.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return NewClient(t, c.Endpoints())
}

// ClientTo returns a new client that talks only to member i, through its
// bridge, closed when t ends. [Cluster.Blackhole] of i cuts it off from etcd
// while the member itself stays in the cluster.
func (c *Cluster) ClientTo(t testing.TB, i int) *clientv3.Client {
	t.Helper()
	return NewClient(t, []string{c.Endpoint(i)})
}

// NewClient returns a client to endpoints with settings for fast tests,
// closed when t ends. Closing it earlier is harmless.
func NewClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(ClientConfig(endpoints))
	if err != nil {
		t.Fatalf("etcdtest: new client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// ClientConfig is the client configuration [NewClient] uses: a short dial
// timeout, keep-alive pings every second so a dead connection is noticed
// quickly, and no logging.
func ClientConfig(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          ClientDialTimeout,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	}
}

// Blackhole makes member i's bridge swallow all client traffic in both
// directions, on open and new connections, until [Cluster.Unblackhole].
// Clients see requests that never complete, like a network partition. The
// member keeps talking to its peers. Blackholing twice is harmless; the state
// survives [Cluster.Stop] and [Cluster.Restart].
func (c *Cluster) Blackhole(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holed[i] {
		return
	}
	c.holed[i] = true
	if b := c.clus.Members[i].GRPCBridge; b != nil {
		b.Blackhole()
	}
}

// Unblackhole undoes [Cluster.Blackhole]: it closes the connections through
// member i's bridge, so clients reconnect and are served again.
func (c *Cluster) Unblackhole(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holed[i] {
		return
	}
	c.holed[i] = false
	if b := c.clus.Members[i].GRPCBridge; b != nil {
		b.Unblackhole()
	}
}

// DropConnections closes every client connection through member i's bridge;
// clients reconnect at once.
func (c *Cluster) DropConnections(i int) {
	if b := c.clus.Members[i].GRPCBridge; b != nil {
		b.DropConnections()
	}
}

// PauseConnections makes member i's bridge stop accepting new client
// connections (open ones keep working) until [Cluster.UnpauseConnections].
func (c *Cluster) PauseConnections(i int) {
	if b := c.clus.Members[i].GRPCBridge; b != nil {
		b.PauseConnections()
	}
}

// UnpauseConnections undoes [Cluster.PauseConnections].
func (c *Cluster) UnpauseConnections(i int) {
	if b := c.clus.Members[i].GRPCBridge; b != nil {
		b.UnpauseConnections()
	}
}

// Stop stops member i, keeping its data; its clients get connection errors.
func (c *Cluster) Stop(i int) {
	c.clus.Members[i].Stop(c.t)
}

// Restart starts a stopped member i again with its data.
func (c *Cluster) Restart(i int) {
	m := c.clus.Members[i]
	if err := m.Restart(c.t); err != nil {
		c.t.Fatalf("etcdtest: restart member %d: %v", i, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holed[i] {
		m.GRPCBridge.Blackhole()
	}
}

// Partition cuts member i off from its peers (its clients still reach it),
// until [Cluster.Heal].
func (c *Cluster) Partition(i int) {
	m := c.clus.Members[i]
	m.InjectPartition(c.t, c.others(i)...)
}

// Heal undoes [Cluster.Partition].
func (c *Cluster) Heal(i int) {
	m := c.clus.Members[i]
	m.RecoverPartition(c.t, c.others(i)...)
}

func (c *Cluster) others(i int) []*integration.Member {
	var others []*integration.Member
	for j, m := range c.clus.Members {
		if j != i {
			others = append(others, m)
		}
	}
	return others
}

// WaitLeader waits until the running members agree on a leader among them
// and returns its index; it fails the test after 30s.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	i, err := c.Leader(ctx)
	if err != nil {
		c.t.Fatalf("etcdtest: wait for leader: %v", err)
	}
	return i
}

// Leader waits until the running members agree on a leader among them and
// returns its index, or fails when ctx ends.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i := c.agreedLeader(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no agreed leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *Cluster) agreedLeader() int {
	var lead uint64
	running := 0
	for _, m := range c.clus.Members {
		if m.Server == nil || stopped(m) {
			continue
		}
		running++
		l := uint64(m.Server.Lead())
		if l == 0 || (lead != 0 && l != lead) {
			return -1
		}
		lead = l
	}
	if running == 0 {
		return -1
	}
	for i, m := range c.clus.Members {
		if m.Server != nil && !stopped(m) && uint64(m.Server.MemberID()) == lead {
			return i
		}
	}
	return -1
}

func stopped(m *integration.Member) bool {
	select {
	case <-m.Server.StopNotify():
		return true
	default:
		return false
	}
}
