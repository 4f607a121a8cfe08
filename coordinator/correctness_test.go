package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/rebalance"
)

// These tests each pin down one defect found by reading the member code:
// each failed (or hung) before its fix.

// handshake makes two goroutines meet: each side's first call signals its
// arrival and waits (up to a limit, so a mistake in the test cannot hang
// it) for the other's.
type handshake struct {
	a, b         chan struct{}
	onceA, onceB sync.Once
}

func newHandshake() *handshake {
	return &handshake{a: make(chan struct{}), b: make(chan struct{})}
}

func (h *handshake) arriveA() {
	h.onceA.Do(func() {
		close(h.a)
		select {
		case <-h.b:
		case <-time.After(5 * time.Second):
		}
	})
}

func (h *handshake) arriveB() {
	h.onceB.Do(func() {
		close(h.b)
		select {
		case <-h.a:
		case <-time.After(5 * time.Second):
		}
	})
}

// Drain looks at the worker's state while the worker, with its own lock
// held, decides why a sync it must give up is revoked (it asks whether the
// member is draining). Before the fix Drain held the coordinator's lock
// while taking the worker's, and the worker the other way round: the two
// met here and the member hung for good.
func TestDrainWhileTheTargetChanges(t *testing.T) {
	meet := newHandshake()
	var armed atomic.Bool // from the Drain on
	coordinator.SetTestHooks(t, coordinator.TestHooks{
		DrainCheck: meet.arriveA,
		RevokeReason: func(string) {
			if armed.Load() {
				meet.arriveB()
			}
		},
	})
	w := newWorld(t, nil)
	ids := syncIDs(6)
	w.putSyncs(ids...)
	m1 := w.join("m1", nil, nil)
	w.join("m2", nil, nil)
	w.settle(ids, "m1", "m2")

	drained := make(chan error, 1)
	armed.Store(true)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- m1.co.Drain(ctx)
	}()
	select {
	case err := <-drained:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Drain hung while the worker applied a target change (lock-order deadlock)")
	}
	owned := make(chan int, 1)
	go func() { owned <- len(m1.co.Owned()) }()
	select {
	case n := <-owned:
		require.Zero(t, n)
	case <-time.After(5 * time.Second):
		t.Fatal("Owned hung")
	}
	w.waitOwned(ids, 5*time.Second, "m2")
}

// cutOff blackholes etcd member i's bridge and closes the connections
// through it: a read already waiting on an open connection would still
// pass one more message (a watch event, say) through the blackhole.
func cutOff(cluster *etcdtest.Cluster, i int) {
	cluster.Blackhole(i)
	cluster.DropConnections(i)
}

// pinned is a Balancer that puts every sync on member on while it is
// live, and on the first live member otherwise.
func pinned(on string) rebalance.Balancer {
	return rebalance.BalancerFunc(func(_ context.Context, in rebalance.Input) (assignment.Plan, error) {
		p := assignment.Plan{}
		if len(in.Members) == 0 {
			return p, nil
		}
		to := in.Members[0].ID
		for _, m := range in.Members {
			if m.ID == on {
				to = on
			}
		}
		for _, s := range in.Syncs {
			p[s.ID] = to
		}
		return p, nil
	})
}

// A sync the member gave up because its spec was unreadable (or deleted)
// must run again once the spec is fixed (or put back), even when the
// member's watches were broken while that happened. Before the fix the
// member kept a "gone" mark that only a spec event cleared, and a reload
// re-read only the specs of syncs with actors: the sync was claimed and
// released at once, for good, while the leader saw its target met.
func TestSyncRunsAgainAfterAFixMissedByABrokenWatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		// settle of the leader: long enough in "readded" that the leader
		// never plans between the delete and the re-add, so the member's
		// target never changes.
		settle time.Duration
		// break the sync as the member sees it
		spoil func(t *testing.T, cli *clientv3.Client, key string)
	}{
		{"fixed", testSettle, func(t *testing.T, cli *clientv3.Client, key string) {
			_, err := cli.Put(context.Background(), key, "{not json")
			require.NoError(t, err)
		}},
		{"readded", 4 * time.Second, func(t *testing.T, cli *clientv3.Client, key string) {
			_, err := cli.Delete(context.Background(), key)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := etcdtest.NewCluster(t, 3)
			w := newWorld(t, cluster)
			key := "/baton/" + w.group + "/syncs/s"
			w.putSyncs("s")
			// m2 leads and pins everything on m1, whose connection (to etcd
			// member 0 only) the test breaks; its TTL outlasts the break.
			m2 := w.join("m2", cluster.ClientTo(t, 1), nil, coordinator.WithBalancer(pinned("m1")), coordinator.WithSettle(tc.settle))
			require.True(t, etcdtest.WaitUntil(5*time.Second, m2.co.IsLeader))
			w.join("m1", cluster.ClientTo(t, 0), nil, coordinator.WithTTL(5*time.Second), coordinator.WithBalancer(pinned("m1")))
			w.waitOwned([]string{"s"}, 10*time.Second, "m1")

			tc.spoil(t, w.admin, key)
			require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
				for _, e := range w.eventsOf("revoke") {
					if e.member == "m1" && e.why == assignment.Removed {
						return true
					}
				}
				return false
			}), "m1 revoked s")
			if tc.name == "fixed" {
				// The leader drops the unreadable sync from m1's target.
				require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
					st := describe(t, w)
					return len(st.Invalid) == 1 && len(st.Members) == 2 && st.Members[0].Targeted == 0
				}), "the leader dropped s from m1's target")
			}
			// Cut m1 off, fix the sync, compact the history and let m1 back:
			// its watches cannot resume and it reloads.
			admin := cluster.ClientTo(t, 1)
			cutOff(cluster, 0)
			ctx := context.Background()
			require.NoError(t, coordinator.NewSyncStore(admin, w.group).Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)}))
			if tc.name == "fixed" {
				require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
					st, err := coordinator.Describe(ctx, admin, w.group)
					return err == nil && len(st.Syncs) == 1 && st.Syncs[0].Target == "m1"
				}), "the leader targets s at m1 again")
			}
			resp, err := admin.Get(ctx, "any")
			require.NoError(t, err)
			_, err = admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
			require.NoError(t, err)
			cluster.Unblackhole(0)
			w.waitOwned([]string{"s"}, 10*time.Second, "m1")
		})
	}
}

// An owner key left on a member's live lease with no sync running behind
// it (a claim applied although its answer was lost, a release that failed)
// must be given back: the lease does not free it while the member lives,
// and any member the sync is moved to would wait for it for ever. Before
// the fix nothing looked for such keys.
func TestOrphanOwnerKeyIsReleasedOnReload(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 3)
	w := newWorld(t, cluster)
	w.putSyncs("a", "orphan")
	m1 := w.join("m1", cluster.ClientTo(t, 0), nil, coordinator.WithTTL(5*time.Second), coordinator.WithBalancer(pinned("m1")))
	w.waitOwned([]string{"a", "orphan"}, 10*time.Second, "m1")
	// Take "orphan" out of the group's plan (the leader's balancer leaves
	// it unassigned), then put an owner key for it on m1's lease by hand,
	// as a late-applied claim would.
	ctx := context.Background()
	_, err := w.admin.Delete(ctx, "/baton/"+w.group+"/syncs/orphan")
	require.NoError(t, err)
	w.waitOwned([]string{"a"}, 10*time.Second, "m1")
	resp, err := w.admin.Get(ctx, "/baton/"+w.group+"/members/m1")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	ownerKey := "/baton/" + w.group + "/owners/orphan"
	_, err = w.admin.Put(ctx, ownerKey, "m1", clientv3.WithLease(clientv3.LeaseID(resp.Kvs[0].Lease)))
	require.NoError(t, err)
	// Cut m1 off, compact the history and let it back: its watches cannot
	// resume and it reloads.
	admin := cluster.ClientTo(t, 1)
	cutOff(cluster, 0)
	_, err = admin.Put(ctx, "/baton/"+w.group+"/unrelated", "x")
	require.NoError(t, err)
	resp, err = admin.Get(ctx, "any")
	require.NoError(t, err)
	_, err = admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	cluster.Unblackhole(0)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		r, err := w.admin.Get(ctx, ownerKey)
		return err == nil && len(r.Kvs) == 0
	}), "m1 released the owner key no actor held")
	require.Len(t, m1.co.Owned(), 1)
}

// Leave with a ctx that has no deadline, called while the member is
// rejoining and another live session holds its ID, must return. Before the
// fix its drain waited for a worker that did not exist.
func TestLeaveWhileRejoiningReturns(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 3)
	w := newWorld(t, cluster)
	w.putSyncs("a", "b")
	w.join("m2", cluster.ClientTo(t, 1), nil)
	m1 := w.join("m1", cluster.ClientTo(t, 0), nil)
	w.settle([]string{"a", "b"}, "m1", "m2")
	// Cut m1 off until its lease is gone, and let another process take
	// its ID meanwhile.
	cluster.Blackhole(0)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		r, err := w.admin.Get(context.Background(), "/baton/"+w.group+"/members/m1")
		return err == nil && len(r.Kvs) == 0
	}), "m1's lease expired")
	other, err := coordinator.New(cluster.ClientTo(t, 2), w.group, w.handler("m1-other"), coordinator.WithMemberID("m1"), coordinator.WithTTL(testTTL), coordinator.WithSettle(testSettle))
	require.NoError(t, err)
	jctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, other.Join(jctx))
	defer func() {
		lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, other.Leave(lctx))
	}()
	cluster.Unblackhole(0)
	left := make(chan error, 1)
	go func() { left <- m1.co.Leave(context.Background()) }()
	select {
	case <-left:
	case <-time.After(20 * time.Second):
		t.Fatal("Leave(context.Background()) hung while the member ID was held by another session")
	}
}

// Deleting a live member's key by hand (an operator's mistake) must not
// leave it campaigning while invisible to the leader: it registers again.
func TestDeletedMemberKeyIsPutBack(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(4)
	w.putSyncs(ids...)
	w.join("m1", nil, nil)
	w.join("m2", nil, nil)
	w.settle(ids, "m1", "m2")
	ctx := context.Background()
	key := "/baton/" + w.group + "/members/m1"
	before, err := w.admin.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, before.Kvs, 1)
	_, err = w.admin.Delete(ctx, key)
	require.NoError(t, err)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		r, err := w.admin.Get(ctx, key)
		return err == nil && len(r.Kvs) == 1 && r.Kvs[0].Lease == before.Kvs[0].Lease
	}), "m1 put its member key back on its lease")
	w.settle(ids, "m1", "m2")
}

// Drain and Leave called from inside a callback, with any ctx, are refused
// rather than waiting for themselves. Before the fix only the callback's
// own ctx was recognised: with another one they hung for good.
func TestCallsFromCallbacksWithAnotherCtxAreRefused(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s", "r")
	var co *coordinator.Coordinator
	ready := make(chan struct{})
	got := make(chan error, 4)
	call := func() {
		<-ready
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		got <- co.Leave(context.Background())
		got <- co.Drain(ctx)
	}
	var once sync.Once
	h := coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			w.rec.Start("m1", c.ID(), c.Token())
			if c.ID() == "s" {
				call()
			}
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			w.rec.End("m1", c.ID(), c.Token())
		},
	}
	// Runner's goroutine counts as a callback too.
	runner := coordinator.Runner(func(ctx context.Context, c *assignment.Claim) error {
		if c.ID() == "r" {
			once.Do(call)
		}
		<-ctx.Done()
		return nil
	})
	both := coordinator.HandlerFuncs{
		Assign: func(ctx context.Context, c *assignment.Claim) error {
			if err := h.Assign(ctx, c); err != nil {
				return err
			}
			return runner.OnAssign(ctx, c)
		},
		Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			runner.OnRevoke(ctx, c, why)
			h.Revoke(ctx, c, why)
		},
	}
	var err error
	co, err = coordinator.New(w.cluster.Client(t), w.group, both, coordinator.WithMemberID("m1"), coordinator.WithTTL(testTTL), coordinator.WithSettle(testSettle))
	require.NoError(t, err)
	close(ready)
	require.NoError(t, co.Join(context.Background()))
	w.mu.Lock()
	w.members["m1"] = &member{id: "m1", co: co}
	w.mu.Unlock()
	for i := range 4 {
		select {
		case err := <-got:
			require.ErrorIs(t, err, coordinator.ErrCalledFromCallback, "call %d", i)
		case <-time.After(20 * time.Second):
			t.Fatalf("call %d from a callback hung", i)
		}
	}
}

// A Put that does not change the spec (the same bytes again, or only the
// weight) must not restart the running sync; a change of the spec does.
// Before the fix every Put restarted it (OnRevoke(SpecChanged), OnAssign),
// so a reconciler re-applying all specs restarted the whole group.
func TestOnlyASpecChangeReachesTheOwner(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s", "u")
	m1 := w.join("m1", nil, nil)
	w.waitOwned([]string{"s", "u"}, 5*time.Second, "m1")
	ctx := context.Background()
	put := func(id string, weight int, spec string) {
		require.NoError(t, w.store.Put(ctx, assignment.Sync{ID: id, Weight: weight, Spec: []byte(spec)}))
	}
	put("s", 0, `{"v":1}`) // byte for byte what putSyncs wrote
	put("s", 3, `{"v":1}`) // weight only
	put("u", 0, `{"v":2}`) // a real change, seen after the two above
	claimOf := func(id string) *assignment.Claim {
		for _, c := range m1.co.Owned() {
			if c.ID() == id {
				return c
			}
		}
		return nil
	}
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		c := claimOf("u")
		return c != nil && string(c.Sync().Spec) == `{"v":2}`
	}), "the spec change reached u's owner")
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		c := claimOf("s")
		return c != nil && c.Sync().Weight == 3
	}), "s's claim shows the new weight")
	for _, e := range w.eventsOf("revoke") {
		require.Equal(t, "u", e.sync, "only u restarted: %+v", w.eventsOf("revoke"))
		require.Equal(t, assignment.SpecChanged, e.why)
	}
}

// An OnRevoke of a planned revoke that is still running when the lease
// comes at risk, and returns after the ownership deadline, is an error in
// the log: only fencing protects downstream writes by then.
func TestRevokeOverrunPastTheDeadlineIsLogged(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 3)
	w := newWorld(t, cluster)
	w.putSyncs("s")
	logs := &logCapture{}
	release := make(chan struct{})
	var claim *assignment.Claim
	var mu sync.Mutex
	entered := make(chan struct{})
	h := coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			w.rec.Start("m1", c.ID(), c.Token())
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			defer w.rec.End("m1", c.ID(), c.Token())
			if why != assignment.Removed {
				return
			}
			mu.Lock()
			claim = c
			mu.Unlock()
			close(entered)
			<-release // ignores its ctx
		},
	}
	w.join("m1", cluster.ClientTo(t, 0), h, coordinator.WithLogger(logs.logger()))
	w.waitOwned([]string{"s"}, 5*time.Second, "m1")
	_, err := w.admin.Delete(context.Background(), "/baton/"+w.group+"/syncs/s")
	require.NoError(t, err)
	<-entered
	cluster.Blackhole(0)
	mu.Lock()
	c := claim
	mu.Unlock()
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return time.Now().After(c.Deadline()) }))
	close(release)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		return logs.has("OnRevoke returned after the ownership deadline")
	}), "the overrun past the deadline is logged as such: %s", logs)
	cluster.Unblackhole(0)
}

// logCapture keeps every log record's message and attributes.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (l *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logCapture) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(len(l.lines), " lines:\n", strings.Join(l.lines, ""))
}
