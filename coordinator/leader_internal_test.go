package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/election"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/keys"
)

// waitsRecorder collects the leader loop's waits (testHookLeaderWait).
type waitsRecorder struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (r *waitsRecorder) record(d time.Duration) {
	r.mu.Lock()
	r.waits = append(r.waits, d)
	r.mu.Unlock()
}

func (r *waitsRecorder) snapshot() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.waits...)
}

// failFirst returns a hook that fails its first n calls, and a func that
// tells how many calls it has seen.
func failFirst(n int) (func() error, func() int) {
	var mu sync.Mutex
	calls := 0
	hook := func() error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= n {
			return errors.New("injected by the test")
		}
		return nil
	}
	return hook, func() int { mu.Lock(); defer mu.Unlock(); return calls }
}

// startLeader puts syncs sync-00000 to sync-<n-1> into group on a fresh
// etcd, joins a lone member m1 there (so it leads) and leaves it at
// cleanup; it returns the member and the syncs' IDs. Hooks must be set
// before, and are cleared after it stopped.
func startLeader(t *testing.T, group string, n int, opts ...Option) (*Coordinator, []string) {
	t.Helper()
	cl := etcdtest.NewCluster(t, 1)
	cli := cl.Client(t)
	all := putSyncs(t, cli, group, n)
	base := []Option{WithMemberID("m1"), WithTTL(time.Second), WithSettle(50 * time.Millisecond)}
	c, err := New(cli, group, HandlerFuncs{}, append(base, opts...)...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Join(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Leave(ctx)
		testHookLeaderLoad, testHookLeaderFollow, testHookLeaderWait = nil, nil, nil
	})
	return c, all
}

// handLeader is a leader whose rounds the test runs itself: member m1's
// Coordinator of a group on a fresh etcd, never joined, and the group's
// election won as m1 on a session of its own (closed at cleanup).
type handLeader struct {
	cli  *clientv3.Client
	c    *Coordinator
	k    keys.Layout
	sess *concurrency.Session
	el   *election.Election
}

func newHandLeader(t *testing.T, ctx context.Context, group string, sessionTTL int) *handLeader {
	t.Helper()
	cl := etcdtest.NewCluster(t, 1)
	l := &handLeader{cli: cl.Client(t)}
	var err error
	l.c, err = New(l.cli, group, HandlerFuncs{}, WithMemberID("m1"), WithTTL(time.Second))
	require.NoError(t, err)
	l.k = l.c.keys
	l.sess, err = concurrency.NewSession(l.cli, concurrency.WithTTL(sessionTTL))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.sess.Close() })
	l.el = election.New(l.sess, l.k.Election())
	_, err = l.el.Campaign(ctx, "m1")
	require.NoError(t, err)
	return l
}

// round runs one round of the leader on v.
func (l *handLeader) round(ctx context.Context, v *view) error {
	_, err := l.c.rebalance(ctx, l.el.Guard(), v, &balancerCalls{})
	return err
}

// requireBackoff checks that the first n waits grow (exponential backoff),
// not a constant or no wait at all.
func requireBackoff(t *testing.T, waits []time.Duration, n int) {
	t.Helper()
	require.GreaterOrEqual(t, len(waits), n, "waits before reloading: %v", waits)
	for i := 1; i < n; i++ {
		require.Greater(t, waits[i], waits[i-1], "waits before reloading do not grow: %v", waits)
	}
}

// TestLeaderLoadRetriesBackOff: a load that keeps failing is retried with
// growing waits, and the leader leads once it succeeds.
func TestLeaderLoadRetriesBackOff(t *testing.T) {
	var rec waitsRecorder
	hook, calls := failFirst(6)
	testHookLeaderLoad, testHookLeaderWait = hook, rec.record
	c, _ := startLeader(t, "leaderloop", 0)
	require.Eventually(t, func() bool { return calls() > 6 }, 20*time.Second, 10*time.Millisecond, "load never retried past the failures")
	requireBackoff(t, rec.snapshot(), 6)
	require.True(t, c.IsLeader())
}

// TestLeaderWatchBreakBacksOff: watches that break at once do not make the
// leader reload in a tight loop; the wait grows until a follow makes
// progress.
func TestLeaderWatchBreakBacksOff(t *testing.T) {
	var rec waitsRecorder
	hook, calls := failFirst(6)
	testHookLeaderFollow, testHookLeaderWait = hook, rec.record
	startLeader(t, "leaderloop", 0)
	require.Eventually(t, func() bool { return calls() > 6 }, 20*time.Second, 10*time.Millisecond, "follow never started past the failures")
	requireBackoff(t, rec.snapshot(), 6)
}

// TestGenerationIsNeverReusedAfterAReload: targets.go says one
// generation names one write ("a new leader starts above every generation
// it can read"), and members rely on it: a target is complete when the
// head and its parts carry one generation. But a leader (or a reload of
// its view) reads the generation from the target keys that still exist;
// once the newest generation's keys are deleted (here: the target of a
// member whose key vanished, dropped in a round that wrote nothing else),
// the next write reuses it. A member that still holds the older write's
// parts (its parts watch behind its head watch: they are two watches)
// then assembles the new head with the old parts and applies a target
// that no plan ever held.
func TestGenerationIsNeverReusedAfterAReload(t *testing.T) {
	setSmallTargets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const group = "reuse"
	l := newHandLeader(t, ctx, group, 10)
	cli, k, sess := l.cli, l.k, l.sess
	putMember := func(id, zone string) {
		m := assignment.Member{ID: id, Weight: 1, Labels: map[string]string{"zone": zone}}
		_, err := cli.Put(ctx, k.Member(id), string(encodeMember(m, false)), clientv3.WithLease(sess.Lease()))
		require.NoError(t, err)
	}
	store := NewSyncStore(cli, group)
	put := func(id, zone string) {
		require.NoError(t, store.Put(ctx, assignment.Sync{ID: id, Labels: map[string]string{"require:zone": zone}}))
	}
	bID := func(i int) string { return fmt.Sprintf("b-%05d", i) }
	round := func() *view {
		v, _, err := loadView(ctx, cli, k)
		require.NoError(t, err)
		require.NoError(t, l.round(ctx, v))
		return v
	}
	getTarget := func(m string) (head []*mvccpb.KeyValue, parts []*mvccpb.KeyValue) {
		h, err := cli.Get(ctx, k.Target(m))
		require.NoError(t, err)
		p, err := cli.Get(ctx, k.TargetParts(m), clientv3.WithPrefix())
		require.NoError(t, err)
		return h.Kvs, p.Kvs
	}

	putMember("m1", "a")
	putMember("m2", "b")
	put("a0", "a")
	round() // generation 1: m1 gets a0
	for i := range 60 {
		put(bID(i), "b")
	}
	round() // generation 2: only m2's target, in 3 parts
	oldHead, oldParts := getTarget("m2")
	require.Len(t, oldHead, 1)
	oldRec, err := decodeTarget("m2", oldHead[0].Value)
	require.NoError(t, err)
	require.Equal(t, int64(2), oldRec.Generation)
	require.Len(t, oldParts, 3)

	// m2's worker has applied it.
	log := slog.New(slog.DiscardHandler)
	var mt memberTarget
	mt.read(k, "m2", oldHead, oldParts)
	old, ok := mt.next(log)
	require.True(t, ok)
	require.Len(t, old, 60)

	// m2's member key is deleted by hand (its worker lives on and puts it
	// back); a round drops m2's target and writes nothing else (b-syncs
	// can run on m2 only).
	_, err = cli.Delete(ctx, k.Member("m2"))
	require.NoError(t, err)
	round()
	h, _ := getTarget("m2")
	require.Empty(t, h)

	// The worker puts its key back; some b-syncs were deleted meanwhile;
	// the leader reloads (a broken watch) and writes m2's new target.
	putMember("m2", "b")
	for i := range 20 {
		_, err := cli.Delete(ctx, k.Sync(bID(i)))
		require.NoError(t, err)
	}
	round()
	newHead, newParts := getTarget("m2")
	require.Len(t, newHead, 1)
	newRec, err := decodeTarget("m2", newHead[0].Value)
	require.NoError(t, err)
	assert.NotEqual(t, oldRec.Generation, newRec.Generation,
		"generation %d names two different writes of m2's target", newRec.Generation)

	// m2's head watch delivers the drop and the new head before its parts
	// watch delivers anything: the previous target must stand (the new
	// head's parts are not there), or the new one apply; never a mix.
	mt.events(k, []*clientv3.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: oldHead[0].Key}}})
	_, _ = mt.next(log) // the drop: an empty target
	mt.events(k, []*clientv3.Event{{Type: mvccpb.PUT, Kv: newHead[0]}})
	got, ok := mt.next(log)
	var want []string
	for i := 20; i < 60; i++ {
		want = append(want, bID(i))
	}
	require.Len(t, newParts, 2)
	if ok {
		assert.True(t, slices.Equal(want, got),
			"m2 applied a target of %d syncs (from %s to %s) made of the new head and the old parts; the plan is %d syncs from %s",
			len(got), got[0], got[len(got)-1], len(want), want[0])
	}
}

// TestPlanErrorIsClearedAfterALostStatusReply: the leader writes
// status/leader for a failed round; etcd applies the write but the reply
// is lost, so the leader records no plan error (v.planError stays "").
// Once the plan is written, clearPlanError sees nothing to clear, and
// Describe reports the old plan error for as long as this leader leads,
// although all is well.
func TestPlanErrorIsClearedAfterALostStatusReply(t *testing.T) {
	// While failTargets is set the leader's target Txns fail (not applied);
	// while loseStatus is set its status/leader writes are applied but
	// answered with an error (the reply was lost).
	var failTargets, loseStatus atomic.Bool
	var lost atomic.Int32
	interceptLeaderKV(t, func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		status := tx.touchesStatus()
		switch {
		case status && loseStatus.Load():
			if _, err := tx.commit(tx.ctx); err != nil {
				return nil, err, true
			}
			lost.Add(1)
			return nil, errors.New("injected: status reply lost"), true
		case !status && failTargets.Load():
			return nil, errors.New("injected: target write failed"), true
		}
		return nil, nil, false
	})
	failTargets.Store(true)
	loseStatus.Store(true)

	c, all := startLeader(t, "lost", 5)
	cli := c.cli
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A failed round reported; the report is in etcd, its reply lost.
	require.Eventually(t, func() bool {
		st, err := Describe(ctx, cli, "lost")
		return err == nil && st.PlanError != "" && lost.Load() > 0
	}, 10*time.Second, 10*time.Millisecond)
	loseStatus.Store(false)
	failTargets.Store(false)
	require.Eventually(t, func() bool { return slices.Equal(all, ownedIDs(c)) }, 10*time.Second, 10*time.Millisecond)

	// One more successful round, for good measure.
	require.NoError(t, NewSyncStore(cli, "lost").Put(ctx, assignment.Sync{ID: all[0], Spec: []byte(`{"v":2}`)}))
	var st *GroupStatus
	ok := etcdtest.WaitUntil(10*time.Second, func() bool {
		var err error
		st, err = Describe(ctx, cli, "lost")
		return err == nil && st.Pending == 0 && st.PlanError == ""
	})
	require.True(t, ok, "a healthy group still shows a plan error: %q", st.PlanError)
}
