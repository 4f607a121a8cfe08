package coordinator_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/recorder"
	"github.com/baton-go/baton/rebalance"
)

func TestFirstJoin(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(5)
	w.putSyncs(ids...)
	m := w.join("m1", nil, nil)
	w.waitOwned(ids, 5*time.Second, "m1")
	require.True(t, etcdtest.WaitUntil(5*time.Second, m.co.IsLeader), "the only member leads")
	require.Len(t, m.co.Owned(), 5)
	for _, c := range m.co.Owned() {
		require.Positive(t, c.Token())
		require.True(t, c.Deadline().After(time.Now()))
		ok, err := c.Valid(context.Background())
		require.NoError(t, err)
		require.True(t, ok)
	}
}

func TestThreeMembersThirtySyncs(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(30)
	w.putSyncs(ids...)
	for _, id := range []string{"m1", "m2", "m3"} {
		w.join(id, nil, nil)
	}
	var owners map[string]string
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		owners = w.owners()
		l := loads(owners)
		return len(owners) == 30 && l["m1"] == 10 && l["m2"] == 10 && l["m3"] == 10
	}), "balanced 10/10/10, have %v", loads(owners))
	st := describe(t, w)
	require.Len(t, st.Members, 3)
	require.Zero(t, st.Pending)
	require.NotEmpty(t, st.Leader)
	require.Positive(t, st.Generation)
}

func TestJoinMovesOnlyTheMinimum(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(30)
	w.putSyncs(ids...)
	for _, id := range []string{"m1", "m2", "m3"} {
		w.join(id, nil, nil)
	}
	revokesBefore := w.settle(ids, "m1", "m2", "m3")
	before := w.owners()
	t0 := recorder.Now()

	w.join("m4", nil, nil)
	var after map[string]string
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		after = w.owners()
		l := loads(after)
		return len(after) == 30 && (l["m4"] == 7 || l["m4"] == 8) && l["m1"] >= 7 && l["m2"] >= 7 && l["m3"] >= 7
	}), "joiner takes 7 or 8, have %v", loads(after))

	moved := 0
	for id, m := range after {
		if before[id] != m {
			moved++
			require.Equal(t, "m4", m, "sync %s moved between old members", id)
		}
	}
	revokes := w.eventsOf("revoke")[revokesBefore:]
	require.Len(t, revokes, moved, "only moved syncs see OnRevoke")
	for _, e := range revokes {
		require.Equal(t, assignment.Rebalanced, e.why)
		require.Equal(t, "m4", after[e.sync], "revoked sync %s went to the joiner", e.sync)
	}
	gaps := w.gapsSince(t0)
	require.Len(t, gaps, moved, "one handoff per moved sync")
	t.Logf("join: %d moved; handoff gaps %v", moved, summarize(gaps))
}

func TestCrashFailover(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(12)
	w.putSyncs(ids...)
	for _, id := range []string{"m1", "m2", "m3"} {
		w.join(id, nil, nil)
	}
	base := w.settle(ids, "m1", "m2", "m3")
	victim := "m3"
	if w.members["m3"].co.IsLeader() {
		victim = "m2"
	}
	var victims []string
	for s, m := range w.owners() {
		if m == victim {
			victims = append(victims, s)
		}
	}
	crashed := time.Now()
	w.crashAsync(victim)
	// Its syncs are revoked locally (Shutdown) but stay claimed in etcd
	// until the lease expires; then the others take them.
	survivors := []string{"m1", "m2", "m3"}
	survivors = slices.DeleteFunc(survivors, func(s string) bool { return s == victim })
	w.waitOwned(ids, failoverBound+2*time.Second, survivors...)
	took := time.Since(crashed)
	w.waitStopped(victim)
	t.Logf("crash failover of %d syncs: %v (bound %v)", len(victims), took, failoverBound)
	require.LessOrEqual(t, took, failoverBound+time.Second, "failover within TTL + settle + 1s (+1s slack for a loaded machine)")
	for _, e := range w.eventsOf("revoke")[base:] {
		if e.member != victim {
			t.Errorf("survivor %s lost %s (%s) in a crash failover", e.member, e.sync, e.why)
		} else {
			require.Equal(t, assignment.Shutdown, e.why)
		}
	}
}

func TestGracefulLeave(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(12)
	w.putSyncs(ids...)
	for _, id := range []string{"m1", "m2", "m3"} {
		w.join(id, nil, nil)
	}
	base := w.settle(ids, "m1", "m2", "m3")
	leaver := w.members["m2"]
	t0 := recorder.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, leaver.co.Leave(ctx))
	require.NoError(t, leaver.co.Err())
	require.Empty(t, leaver.co.Owned())
	w.waitOwned(ids, 5*time.Second, "m1", "m3")
	for _, e := range w.eventsOf("revoke")[base:] {
		require.Equal(t, "m2", e.member)
		require.Equal(t, assignment.Draining, e.why, "syncs leave a draining member by the drain")
	}
	gaps := w.gapsSince(t0)
	require.Len(t, gaps, 4, "m2's four syncs moved")
	t.Logf("leave: handoff gaps %v", summarize(gaps))
	for _, g := range gaps {
		require.Less(t, g, 2*time.Second, "a sync stayed unowned no longer than a handoff")
	}
	st := describe(t, w)
	require.Len(t, st.Members, 2)
}

func TestLeaderCrash(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(12)
	w.putSyncs(ids...)
	for _, id := range []string{"m1", "m2", "m3"} {
		w.join(id, nil, nil)
	}
	base := w.settle(ids, "m1", "m2", "m3")
	var leader string
	for id, m := range w.members {
		if m.co.IsLeader() {
			leader = id
		}
	}
	require.NotEmpty(t, leader)
	crashed := time.Now()
	w.crashAsync(leader)
	var survivors []string
	for id := range w.members {
		if id != leader {
			survivors = append(survivors, id)
		}
	}
	w.waitOwned(ids, failoverBound+2*time.Second, survivors...)
	t.Logf("leader crash failover: %v (bound %v)", time.Since(crashed), failoverBound)
	w.waitStopped(leader)
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		return w.members[survivors[0]].co.IsLeader() || w.members[survivors[1]].co.IsLeader()
	}), "a new leader")
	for _, e := range w.eventsOf("revoke")[base:] {
		require.Equal(t, leader, e.member, "no spurious moves: survivors keep their syncs")
	}
	require.Equal(t, 6, loads(w.owners())[survivors[0]])
}

// updater is a handler that takes spec changes in place.
type updater struct {
	coordinator.HandlerFuncs
	w  *world
	id string
}

func (u updater) OnUpdate(_ context.Context, c *assignment.Claim) {
	u.w.log(event{member: u.id, sync: c.ID(), token: c.Token(), kind: "update"})
}

func TestSyncAddRemoveSpecChange(t *testing.T) {
	w := newWorld(t, nil)
	w.putSyncs("a", "b")
	w.join("plain", nil, nil)
	w.join("upd", nil, updater{HandlerFuncs: w.handler("upd"), w: w, id: "upd"})
	base := w.settle([]string{"a", "b"}, "plain", "upd")
	w.putSyncs("c")
	w.waitOwned([]string{"a", "b", "c"}, 5*time.Second)

	ctx := context.Background()
	require.NoError(t, w.store.Delete(ctx, "c"))
	w.waitOwned([]string{"a", "b"}, 5*time.Second)
	removed := w.eventsOf("revoke")[base:]
	require.Len(t, removed, 1)
	require.Equal(t, "c", removed[0].sync)
	require.Equal(t, assignment.Removed, removed[0].why)

	// A spec change: the Updater gets OnUpdate, the plain handler a revoke
	// and an assign with the same token, on the same member.
	owners := w.owners()
	before := map[string]int64{}
	for _, e := range w.eventsOf("assign") {
		before[e.sync] = e.token
	}
	assigns := len(w.eventsOf("assign"))
	for _, id := range []string{"a", "b"} {
		require.NoError(t, w.store.Put(ctx, assignment.Sync{ID: id, Spec: []byte(`{"v":2}`)}))
	}
	require.True(t, etcdtest.WaitUntil(5*time.Second, func() bool {
		return len(w.eventsOf("update")) == 1 && len(w.eventsOf("revoke")) == base+2 && len(w.eventsOf("assign")) == assigns+1
	}), "events: %v", w.eventsOf(""))
	upd := w.eventsOf("update")[0]
	require.Equal(t, "upd", upd.member)
	require.Equal(t, before[upd.sync], upd.token)
	rv := w.eventsOf("revoke")[base+1]
	require.Equal(t, assignment.SpecChanged, rv.why)
	require.Equal(t, "plain", rv.member)
	require.Equal(t, owners, w.owners(), "spec changes move nothing")
	last := w.eventsOf("assign")
	require.Equal(t, before[rv.sync], last[len(last)-1].token, "same token after a spec change")
	for _, c := range w.members["upd"].co.Owned() {
		require.JSONEq(t, `{"v":2}`, string(c.Sync().Spec))
	}
}

func TestCutOffMemberRevokesByDeadline(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 3)
	w := newWorld(t, cluster)
	ids := syncIDs(9)
	w.putSyncs(ids...)
	// The victim talks only to etcd member 0; the others only to 1 and 2.
	w.join("cut", cluster.ClientTo(t, 0), nil)
	w.join("m1", cluster.ClientTo(t, 1), nil)
	w.join("m2", cluster.ClientTo(t, 2), nil)
	base := w.settle(ids, "cut", "m1", "m2")
	var lost []string
	for s, m := range w.owners() {
		if m == "cut" {
			lost = append(lost, s)
		}
	}
	cut := time.Now()
	cluster.Blackhole(0)
	w.waitOwned(ids, failoverBound+3*time.Second, "m1", "m2")
	t.Logf("cut-off member's %d syncs owned elsewhere after %v", len(lost), time.Since(cut))
	// Every sync the victim held was revoked (LeaseLost) before anyone
	// else started it: the recorder's overlap check proves the order, and
	// here the reason.
	revoked := map[string]bool{}
	for _, e := range w.eventsOf("revoke")[base:] {
		if e.member == "cut" {
			require.Equal(t, assignment.LeaseLost, e.why)
			revoked[e.sync] = true
		}
	}
	for _, s := range lost {
		require.True(t, revoked[s], "victim revoked %s", s)
	}
	require.NoError(t, w.rec.Check())
	cluster.Unblackhole(0)
	// Back in touch, the victim joins again under its ID and gets work.
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return loads(w.owners())["cut"] > 0 }), "victim rejoins: %v", loads(w.owners()))
}

func TestDuplicateMemberID(t *testing.T) {
	w := newWorld(t, nil)
	w.join("same", nil, nil)
	co, err := coordinator.New(w.cluster.Client(t), w.group, w.handler("same-2"), coordinator.WithMemberID("same"), coordinator.WithTTL(testTTL))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err = co.Join(ctx)
	require.ErrorIs(t, err, coordinator.ErrMemberIDInUse)
	require.Contains(t, err.Error(), "same")
}

func TestInvalidInput(t *testing.T) {
	w := newWorld(t, nil)
	cli := w.admin
	h := coordinator.HandlerFuncs{}
	for name, tc := range map[string]struct {
		group string
		opts  []coordinator.Option
		is    error  // the error wraps it, if set
		says  string // the message says it
	}{
		"group with slash":  {group: "a/b", is: assignment.ErrInvalidID, says: `"a/b"`},
		"empty group":       {group: "", is: assignment.ErrInvalidID, says: "group"},
		"dot-dot group":     {group: "..", is: assignment.ErrInvalidID, says: `".."`},
		"control character": {group: "g", opts: []coordinator.Option{coordinator.WithMemberID("a\x00b")}, is: assignment.ErrInvalidID, says: "WithMemberID"},
		"long member":       {group: "g", opts: []coordinator.Option{coordinator.WithMemberID(string(make([]byte, 200)))}, is: assignment.ErrInvalidID, says: "WithMemberID"},
		"bad prefix":        {group: "g", opts: []coordinator.Option{coordinator.WithPrefix("no-slash")}, is: assignment.ErrInvalidID, says: "WithPrefix"},
		"ttl too short":     {group: "g", opts: []coordinator.Option{coordinator.WithTTL(500 * time.Millisecond)}, says: "WithTTL(500ms): TTL must be at least 1s"},
		"ttl fraction":      {group: "g", opts: []coordinator.Option{coordinator.WithTTL(1500 * time.Millisecond)}, says: "WithTTL(1.5s): etcd leases have whole seconds"},
		"revoke timeout":    {group: "g", opts: []coordinator.Option{coordinator.WithTTL(4 * time.Second), coordinator.WithRevokeTimeout(2 * time.Second)}, says: "WithRevokeTimeout(2s) must be less than TTL/2 (2s)"},
		"negative settle":   {group: "g", opts: []coordinator.Option{coordinator.WithSettle(-time.Second)}, says: "WithSettle(-1s): must not be negative"},
		"zero weight":       {group: "g", opts: []coordinator.Option{coordinator.WithWeight(0)}, says: "WithWeight(0): weight must be at least 1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := coordinator.New(cli, tc.group, h, tc.opts...)
			require.ErrorContains(t, err, tc.says)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
		})
	}
	// Every wrong setting is named at once, not only the first.
	_, err := coordinator.New(cli, "g", h, coordinator.WithWeight(0), coordinator.WithTTL(500*time.Millisecond))
	require.ErrorContains(t, err, "WithWeight(0)")
	require.ErrorContains(t, err, "WithTTL(500ms)")
	_, err = coordinator.New(nil, "g", h)
	require.ErrorContains(t, err, "nil etcd client")
	_, err = coordinator.New(cli, "g", nil)
	require.ErrorContains(t, err, "nil Handler")

	ctx := context.Background()
	require.ErrorIs(t, w.store.Put(ctx, assignment.Sync{ID: "../x"}), assignment.ErrInvalidID)
	require.ErrorIs(t, w.store.Put(ctx, assignment.Sync{ID: "x", Spec: []byte("{not json")}), coordinator.ErrInvalidSpec)
	require.ErrorIs(t, w.store.Delete(ctx, "a/b"), assignment.ErrInvalidID)
	require.ErrorIs(t, coordinator.NewSyncStore(cli, "a/b").Put(ctx, assignment.Sync{ID: "x"}), assignment.ErrInvalidID)

	// Broken specs written by hand are reported and left unassigned; the
	// rest of the group runs on.
	w.putSyncs("good")
	_, err = cli.Put(ctx, "/baton/"+w.group+"/syncs/broken", "{not json")
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/baton/"+w.group+"/syncs/nested/key", `{}`)
	require.NoError(t, err)
	w.join("m1", nil, nil)
	w.waitOwned([]string{"good"}, 5*time.Second)
	st := describe(t, w)
	require.Len(t, st.Invalid, 2, "%+v", st.Invalid)
	syncs, err := w.store.List(ctx)
	require.ErrorIs(t, err, coordinator.ErrInvalidSpec)
	require.Len(t, syncs, 1)
}

func TestBalancerFailuresKeepPreviousTargets(t *testing.T) {
	for _, mode := range []string{"error", "panic", "invalid"} {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, nil)
			var broken atomic.Bool
			var failures atomic.Int64
			b := rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
				if broken.Load() {
					failures.Add(1)
					switch mode {
					case "error":
						return nil, errors.New("balancer is down")
					case "panic":
						panic("balancer bug")
					default:
						p := assignment.Plan{}
						for _, s := range in.Syncs {
							p[s.ID] = "no-such-member"
						}
						return p, nil
					}
				}
				return rebalance.Sticky().Balance(ctx, in)
			})
			w.putSyncs("a", "b")
			w.join("m1", nil, nil, coordinator.WithBalancer(b))
			w.waitOwned([]string{"a", "b"}, 5*time.Second, "m1")
			gen := describe(t, w).Generation
			broken.Store(true)
			w.putSyncs("c")
			w.join("m2", nil, nil, coordinator.WithBalancer(b))
			// The leader tries (a sync and a member were added) and fails
			// more than once; nothing may change.
			require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return failures.Load() >= 2 }))
			st := describe(t, w)
			require.Equal(t, gen, st.Generation, "no plan written")
			require.Equal(t, map[string]string{"a": "m1", "b": "m1"}, w.owners())
			require.Empty(t, w.eventsOf("revoke"))
			broken.Store(false)
			w.putSyncs("d") // any change makes the leader try again
			w.waitOwned([]string{"a", "b", "c", "d"}, 5*time.Second)
		})
	}
}
