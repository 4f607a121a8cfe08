package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/recorder"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

const (
	testTTL    = time.Second // granted as asked by the integration cluster
	testSettle = 50 * time.Millisecond
	// failoverBound is DESIGN.md's bound for a crash: TTL + Settle + 1s.
	failoverBound = testTTL + testSettle + time.Second
)

// event is one callback seen by a test handler.
type event struct {
	member string
	sync   string
	token  int64
	kind   string // "assign", "update", "revoke"
	why    assignment.RevokeReason
	at     time.Time
}

// world is one test's group: members sharing a recorder of every
// ownership interval, and a log of every callback.
type world struct {
	t       *testing.T
	cluster *etcdtest.Cluster
	group   string
	admin   *clientv3.Client
	store   *coordinator.SyncStore
	rec     *recorder.Recorder

	mu      sync.Mutex
	events  []event
	members map[string]*member
}

type member struct {
	id  string
	cli *clientv3.Client
	co  *coordinator.Coordinator
}

var groupSeq atomic.Int64

func newWorld(t *testing.T, cluster *etcdtest.Cluster) *world {
	t.Helper()
	if cluster == nil {
		cluster = etcdtest.NewCluster(t, 1)
	}
	w := &world{
		t:       t,
		cluster: cluster,
		group:   fmt.Sprintf("g%d", groupSeq.Add(1)),
		admin:   cluster.Client(t),
		rec:     recorder.New(),
		members: map[string]*member{},
	}
	w.store = coordinator.NewSyncStore(w.admin, w.group)
	t.Cleanup(func() {
		// Stop every member still running, then check the invariant over
		// the whole test.
		for _, m := range w.snapshotMembers() {
			select {
			case <-m.co.Done():
			default:
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_ = m.co.Leave(ctx)
				cancel()
			}
		}
		require.NoError(t, w.rec.Check(), "single-owner invariant")
	})
	return w
}

func (w *world) snapshotMembers() []*member {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*member, 0, len(w.members))
	for _, m := range w.members {
		out = append(out, m)
	}
	return out
}

func (w *world) log(e event) {
	e.at = time.Now()
	w.mu.Lock()
	w.events = append(w.events, e)
	w.mu.Unlock()
}

// eventsOf returns the callbacks seen so far, optionally only of one kind.
func (w *world) eventsOf(kind string) []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []event
	for _, e := range w.events {
		if kind == "" || e.kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// handler records intervals and events for member id.
func (w *world) handler(id string) coordinator.HandlerFuncs {
	return coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			w.rec.Start(id, c.ID(), c.Token())
			w.log(event{member: id, sync: c.ID(), token: c.Token(), kind: "assign"})
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			w.rec.End(id, c.ID(), c.Token())
			w.log(event{member: id, sync: c.ID(), token: c.Token(), kind: "revoke", why: why})
		},
	}
}

// join starts member id with its own client (cli may be nil: a new client
// to the whole cluster) and the recording handler unless h is given.
func (w *world) join(id string, cli *clientv3.Client, h coordinator.Handler, opts ...coordinator.Option) *member {
	w.t.Helper()
	if cli == nil {
		cli = w.cluster.Client(w.t)
	}
	if h == nil {
		h = w.handler(id)
	}
	base := []coordinator.Option{coordinator.WithMemberID(id), coordinator.WithTTL(testTTL), coordinator.WithSettle(testSettle)}
	co, err := coordinator.New(cli, w.group, h, append(base, opts...)...)
	require.NoError(w.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(w.t, co.Join(ctx))
	m := &member{id: id, cli: cli, co: co}
	w.mu.Lock()
	w.members[id] = m
	w.mu.Unlock()
	return m
}

// crash closes a member's client: no goodbye, its lease is left to expire.
func (w *world) crash(id string) {
	w.t.Helper()
	w.crashAsync(id)
	w.waitStopped(id)
}

// crashAsync closes a member's client and returns at once.
func (w *world) crashAsync(id string) {
	w.t.Helper()
	w.mu.Lock()
	m := w.members[id]
	w.mu.Unlock()
	require.NoError(w.t, m.cli.Close())
}

// waitStopped waits for a crashed member to stop for good.
func (w *world) waitStopped(id string) {
	w.t.Helper()
	w.mu.Lock()
	m := w.members[id]
	w.mu.Unlock()
	select {
	case <-m.co.Done():
	case <-time.After(10 * time.Second):
		w.t.Fatalf("%s did not stop after its client closed", id)
	}
	require.Error(w.t, m.co.Err())
}

func (w *world) putSyncs(ids ...string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		require.NoError(w.t, w.store.Put(ctx, assignment.Sync{ID: id, Spec: []byte(`{"v":1}`)}))
	}
}

func syncIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("s%03d", i)
	}
	return out
}

// owners is the recorder's view: sync -> member running it now.
func (w *world) owners() map[string]string { return w.rec.Owners() }

// waitOwned waits until exactly the syncs in ids are running, each on one
// of the members in on (any member if on is empty), and returns the owners.
func (w *world) waitOwned(ids []string, timeout time.Duration, on ...string) map[string]string {
	w.t.Helper()
	allowed := map[string]bool{}
	for _, m := range on {
		allowed[m] = true
	}
	var last map[string]string
	ok := etcdtest.WaitUntil(timeout, func() bool {
		last = w.owners()
		if len(last) != len(ids) {
			return false
		}
		for _, id := range ids {
			m, ok := last[id]
			if !ok || (len(allowed) > 0 && !allowed[m]) {
				return false
			}
		}
		return true
	})
	if !ok {
		w.t.Fatalf("after %v: want %d syncs owned on %v, have %d: %v", timeout, len(ids), on, len(last), last)
	}
	return last
}

// loads counts syncs per member.
func loads(owners map[string]string) map[string]int {
	out := map[string]int{}
	for _, m := range owners {
		out[m]++
	}
	return out
}

func describe(t *testing.T, w *world) *coordinator.GroupStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := coordinator.Describe(ctx, w.admin, w.group)
	require.NoError(t, err)
	return st
}

// gapsSince returns the handoff gaps (time with no owner between two
// owners) that started after t0.
func (w *world) gapsSince(t0 int64) []time.Duration {
	var out []time.Duration
	for _, g := range w.rec.Gaps() {
		if g.Start >= t0 {
			out = append(out, g.Duration())
		}
	}
	return out
}

// summarize gives the median and max of ds for logs.
func summarize(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%v max=%v", len(s), s[len(s)/2], s[len(s)-1])
}

// settle waits until every sync in ids runs on one of members, the loads
// differ by at most one, and the plan has nothing pending; it returns the
// number of revokes so far, so a test can look only at what follows.
func (w *world) settle(ids []string, members ...string) int {
	w.t.Helper()
	ok := etcdtest.WaitUntil(15*time.Second, func() bool {
		owners := w.owners()
		if len(owners) != len(ids) {
			return false
		}
		l := loads(owners)
		lo, hi := len(ids), 0
		for _, m := range members {
			lo, hi = min(lo, l[m]), max(hi, l[m])
		}
		if hi-lo > 1 || len(l) != len(members) {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := coordinator.Describe(ctx, w.admin, w.group)
		return err == nil && st.Pending == 0 && len(st.Syncs) == len(ids)
	})
	if !ok {
		w.t.Fatalf("group did not settle: %d syncs on %v, loads %v", len(ids), members, loads(w.owners()))
	}
	return len(w.eventsOf("revoke"))
}

// logWatch is a slog.Handler that reports each record whose message
// contains a given text.
type logWatch struct {
	text string
	seen chan struct{}
}

func (h *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (h *logWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.text) {
		select {
		case h.seen <- struct{}{}:
		default:
		}
	}
	return nil
}
func (h *logWatch) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logWatch) WithGroup(string) slog.Handler      { return h }
