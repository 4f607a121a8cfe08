package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
)

// TestRunnerFailureIsRetried: a run function that fails is revoked,
// released and claimed again after a backoff: each retry runs under a new
// claim, with a higher token, and the run that keeps going is the claim
// the member owns.
func TestRunnerFailureIsRetried(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s")
	var mu sync.Mutex
	var tokens []int64
	h := coordinator.Runner(func(ctx context.Context, c *assignment.Claim) error {
		mu.Lock()
		tokens = append(tokens, c.Token())
		n := len(tokens)
		mu.Unlock()
		w.rec.Start("m1", c.ID(), c.Token())
		defer w.rec.End("m1", c.ID(), c.Token())
		if n <= 2 {
			return errors.New("source unavailable")
		}
		<-ctx.Done()
		return nil
	})
	m := w.join("m1", nil, h)
	runs := func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(tokens)
	}
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return len(runs()) >= 3 && len(m.co.Owned()) == 1 }), "run retried after failures")
	got := runs()
	require.Len(t, got, 3, "the run that did not fail is not restarted")
	require.Less(t, got[0], got[1], "a retry is a new claim: %v", got)
	require.Less(t, got[1], got[2], "a retry is a new claim: %v", got)
	require.Equal(t, got[2], m.co.Owned()[0].Token(), "the member owns the claim of the run that keeps going")
}

func TestAssignErrorAndPanicAreRecovered(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s")
	var calls atomic.Int64
	h := coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			switch calls.Add(1) {
			case 1:
				return errors.New("not ready")
			case 2:
				panic("handler bug")
			}
			w.rec.Start("m1", c.ID(), c.Token())
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			w.log(event{member: "m1", sync: c.ID(), kind: "revoke", why: why})
			if why != assignment.Failed {
				w.rec.End("m1", c.ID(), c.Token())
			}
		},
	}
	m := w.join("m1", nil, h)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return calls.Load() == 3 && len(w.owners()) == 1 }))
	revokes := w.eventsOf("revoke")
	require.Len(t, revokes, 2, "every failed OnAssign is followed by OnRevoke(Failed)")
	for _, e := range revokes {
		require.Equal(t, assignment.Failed, e.why)
	}
	require.Len(t, m.co.Owned(), 1)
}

func TestCheckpointIsFenced(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s")
	m1 := w.join("m1", nil, nil)
	w.waitOwned([]string{"s"}, 5*time.Second, "m1")
	old := m1.co.Owned()[0]
	ctx := context.Background()
	require.NoError(t, old.SaveCheckpoint(ctx, []byte("pos=1")))

	w.join("m2", nil, nil)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, m1.co.Leave(lctx))
	w.waitOwned([]string{"s"}, 5*time.Second, "m2")
	next := w.members["m2"].co.Owned()[0]
	require.Greater(t, next.Token(), old.Token(), "tokens increase across owners")

	// The old claim is a zombie now: its fenced writes fail, its guard too.
	require.ErrorIs(t, old.SaveCheckpoint(ctx, []byte("pos=stale")), assignment.ErrNotOwner)
	ok, err := old.Valid(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	resp, err := w.admin.Txn(ctx).If(old.Guard()).Commit()
	require.NoError(t, err)
	require.False(t, resp.Succeeded)

	cp, err := next.LoadCheckpoint(ctx)
	require.NoError(t, err)
	require.Equal(t, "pos=1", string(cp), "the new owner resumes from the last fenced checkpoint")
	require.NoError(t, next.SaveCheckpoint(ctx, []byte("pos=2")))
}

func TestDrain(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(6)
	w.putSyncs(ids...)
	m1 := w.join("m1", nil, nil)
	w.join("m2", nil, nil)
	base := w.settle(ids, "m1", "m2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m1.co.Drain(ctx))
	require.Empty(t, m1.co.Owned())
	w.waitOwned(ids, 5*time.Second, "m2")
	for _, e := range w.eventsOf("revoke")[base:] {
		require.Equal(t, assignment.Draining, e.why)
	}
	st := describe(t, w)
	for _, m := range st.Members {
		require.Equal(t, m.ID == "m1", m.Draining)
	}
	// A drain nobody can absorb waits until its ctx ends.
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	require.ErrorIs(t, w.members["m2"].co.Drain(short), context.DeadlineExceeded)
}

func TestCallsFromCallbacksAreRefused(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s")
	var co atomic.Pointer[coordinator.Coordinator]
	got := make(chan error, 2)
	h := coordinator.HandlerFuncs{
		Assign: func(ctx context.Context, c *assignment.Claim) error {
			w.rec.Start("m1", c.ID(), c.Token())
			got <- co.Load().Leave(ctx)
			got <- co.Load().Drain(ctx)
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			w.rec.End("m1", c.ID(), c.Token())
		},
	}
	c, err := coordinator.New(w.cluster.Client(t), w.group, h, coordinator.WithMemberID("m1"), coordinator.WithTTL(testTTL), coordinator.WithSettle(testSettle))
	require.NoError(t, err)
	co.Store(c)
	require.NoError(t, c.Join(context.Background()))
	w.mu.Lock()
	w.members["m1"] = &member{id: "m1", co: c}
	w.mu.Unlock()
	require.ErrorIs(t, <-got, coordinator.ErrCalledFromCallback)
	require.ErrorIs(t, <-got, coordinator.ErrCalledFromCallback)
}

func TestLifecycleErrors(t *testing.T) {
	w := newWorld(t, nil)
	c, err := coordinator.New(w.admin, w.group, coordinator.HandlerFuncs{})
	require.NoError(t, err)
	ctx := context.Background()
	require.ErrorIs(t, c.Leave(ctx), coordinator.ErrNotJoined)
	require.ErrorIs(t, c.Drain(ctx), coordinator.ErrNotJoined)
	require.NoError(t, c.Join(ctx))
	require.ErrorIs(t, c.Join(ctx), coordinator.ErrAlreadyJoined)
	require.NotEmpty(t, c.MemberID())
	require.NoError(t, c.Leave(ctx))
	<-c.Done()
	require.NoError(t, c.Err())
	require.ErrorIs(t, c.Leave(ctx), coordinator.ErrClosed)
	require.ErrorIs(t, c.Join(ctx), coordinator.ErrClosed)
}

func TestWatchCompactionReloads(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 3)
	w := newWorld(t, cluster)
	w.putSyncs("a")
	// m1 reaches etcd only through member 0's bridge; its TTL is long
	// enough that the stall below does not cost it its lease.
	m1 := w.join("m1", cluster.ClientTo(t, 0), nil, coordinator.WithTTL(5*time.Second))
	w.waitOwned([]string{"a"}, 5*time.Second, "m1")
	ctx := context.Background()
	admin := cluster.ClientTo(t, 1)
	store := coordinator.NewSyncStore(admin, w.group)
	// Stall m1's connection, change the group, compact the history, then
	// drop the connection: m1's watches resume from a compacted revision
	// and must reload.
	cluster.PauseConnections(0)
	for i := 2; i <= 6; i++ {
		require.NoError(t, store.Put(ctx, assignment.Sync{ID: "a", Spec: []byte(fmt.Sprintf(`{"v":%d}`, i))}))
	}
	require.NoError(t, store.Put(ctx, assignment.Sync{ID: "b"}))
	resp, err := admin.Get(ctx, "any")
	require.NoError(t, err)
	_, err = admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	cluster.DropConnections(0)
	cluster.UnpauseConnections(0)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		owned := m1.co.Owned()
		return len(owned) == 2 && owned[0].ID() == "a" && string(owned[0].Sync().Spec) == `{"v":6}`
	}), "m1 runs a's newest spec and b: %v", m1.co.Owned())
	for _, e := range w.eventsOf("revoke") {
		require.NotEqual(t, assignment.LeaseLost, e.why, "the watch reloaded; the lease held")
	}
}

func TestDrainFromOutside(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(4)
	w.putSyncs(ids...)
	w.join("m1", nil, nil)
	w.join("m2", nil, nil)
	base := w.settle(ids, "m1", "m2")
	// An operator's tool marks m1 draining in its member key, on m1's lease.
	ctx := context.Background()
	key := "/baton/" + w.group + "/members/m1"
	resp, err := w.admin.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	kv := resp.Kvs[0]
	txn, err := w.admin.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpPut(key, `{"weight":1,"draining":true}`, clientv3.WithLease(clientv3.LeaseID(kv.Lease)))).Commit()
	require.NoError(t, err)
	require.True(t, txn.Succeeded)
	w.waitOwned(ids, 5*time.Second, "m2")
	for _, e := range w.eventsOf("revoke")[base:] {
		require.Equal(t, "m1", e.member)
		require.Equal(t, assignment.Draining, e.why, "the member adopted the drain")
	}
}

func TestEveryoneLeavesAtOnce(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(6)
	w.putSyncs(ids...)
	members := []*member{w.join("m1", nil, nil), w.join("m2", nil, nil), w.join("m3", nil, nil)}
	w.settle(ids, "m1", "m2", "m3")
	// Each Leave drains while someone else could take over; once everyone
	// is draining nobody can, and each must go on to leave rather than wait
	// out its ctx.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	errs := make(chan error, len(members))
	for _, m := range members {
		go func() { errs <- m.co.Leave(ctx) }()
	}
	for range members {
		require.NoError(t, <-errs)
	}
	require.Less(t, time.Since(start), 30*time.Second, "nobody waited for its ctx")
	require.Empty(t, w.owners())
}

// breakingWatcher breaks (as etcd does on a leader loss, with
// WithRequireLeader) the first watch on prefix made without a start
// revision once armed: the one Leave's drain keeps on the members.
type breakingWatcher struct {
	clientv3.Watcher
	prefix string
	armed  atomic.Bool
	once   sync.Once
	broke  chan struct{}
}

func (b *breakingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	op := clientv3.OpGet(key, opts...)
	if b.armed.Load() && key == b.prefix && op.IsOptsWithPrefix() && op.Rev() == 0 {
		first := false
		b.once.Do(func() { first = true })
		if first {
			ch := make(chan clientv3.WatchResponse, 1)
			ch <- clientv3.WatchResponse{Canceled: true, CancelReason: "etcdserver: no leader"}
			close(ch)
			close(b.broke)
			return ch
		}
	}
	return b.Watcher.Watch(ctx, key, opts...)
}

// Leave's drain stops early once no other member can take the syncs
// (drainForLeave), which it learns from a watch on the members. When that
// watch breaks (an etcd leader change), drainForLeave gives up watching
// ("the drain runs on to its ctx") instead of watching again. If the other
// members then drain or leave, nobody can take the syncs, the drain never
// completes, and Leave with a ctx that has no deadline never returns.
func TestLeaveReturnsWhenItsMembersWatchBroke(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(4)
	w.putSyncs(ids...)
	cli := w.cluster.Client(t)
	bw := &breakingWatcher{Watcher: cli.Watcher, prefix: "/baton/" + w.group + "/members/", broke: make(chan struct{})}
	cli.Watcher = bw
	// m1's first revoke for the drain waits until m2 has gone, so m1 is
	// not drained before.
	hold := make(chan struct{})
	var holdOnce sync.Once
	rec := w.handler("m1")
	h := coordinator.HandlerFuncs{
		Assign: rec.Assign,
		Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			if why == assignment.Draining {
				holdOnce.Do(func() {
					select {
					case <-hold:
					case <-time.After(30 * time.Second):
					}
				})
			}
			rec.Revoke(ctx, c, why)
		},
	}
	m1 := w.join("m1", cli, h)
	m2 := w.join("m2", nil, nil)
	w.settle(ids, "m1", "m2")

	bw.armed.Store(true)
	left := make(chan error, 1)
	go func() { left <- m1.co.Leave(context.Background()) }()
	select {
	case <-bw.broke:
	case <-time.After(10 * time.Second):
		t.Fatal("Leave's drain did not watch the members")
	}
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		r, err := w.admin.Get(context.Background(), "/baton/"+w.group+"/members/m1")
		return err == nil && len(r.Kvs) == 1 && strings.Contains(string(r.Kvs[0].Value), `"draining":true`)
	}), "m1 says it drains")
	// m2 leaves: m1 drains, so m2 is alone and goes at once.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, m2.co.Leave(ctx))
	close(hold)
	select {
	case err := <-left:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("m1's Leave(context.Background()) hung: nobody is left to take its syncs, and its members watch had broken")
	}
}

// TestPlannedRevokeCtxOutlivesOnRevoke: a planned revoke's ctx ends only
// when the lease comes at risk (or the session ends), as Handler says, not
// when OnRevoke returns: work OnRevoke hands it to, such as a last flush,
// may outlive the call.
func TestPlannedRevokeCtxOutlivesOnRevoke(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("s")
	revoked := make(chan context.Context, 1)
	h := coordinator.HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			w.rec.Start("m1", c.ID(), c.Token())
			return nil
		},
		Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			w.rec.End("m1", c.ID(), c.Token())
			if why == assignment.Draining {
				revoked <- ctx
			}
		},
	}
	m1 := w.join("m1", nil, h)
	w.waitOwned([]string{"s"}, 5*time.Second, "m1")
	w.join("m2", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m1.co.Drain(ctx))
	rctx := <-revoked
	require.NoError(t, rctx.Err(), "the drained member's session lives on, and so does the ctx")
	require.NoError(t, m1.co.Leave(ctx))
	require.Error(t, rctx.Err(), "it ends with the session")
}
