package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
)

func testLayout(t *testing.T) keys.Layout {
	k, err := keys.New(DefaultPrefix, "g")
	require.NoError(t, err)
	return k
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("sync-%05d", i)
	}
	return out
}

// store puts records as kvs of member m at rev.
func storeTarget(k keys.Layout, m string, rev int64, head targetRecord, parts []targetRecord) []*mvccpb.KeyValue {
	out := []*mvccpb.KeyValue{{Key: []byte(k.Target(m)), Value: encodeSorted(head), ModRevision: rev}}
	for i, p := range parts {
		out = append(out, &mvccpb.KeyValue{Key: []byte(k.Target(m) + partSuffix(i)), Value: encodeSorted(p), ModRevision: rev})
	}
	return out
}

func TestSplitTargetRoundTrip(t *testing.T) {
	k := testLayout(t)
	for _, n := range []int{0, 1, 50, 1000} {
		syncs := ids(n)
		head, parts := splitTarget(7, syncs, 300)
		if n > 10 {
			require.Greater(t, len(parts), 1)
		}
		for _, p := range parts {
			require.LessOrEqual(t, len(encodeSorted(p)), 300)
		}
		var tk targetKeys
		for _, kv := range storeTarget(k, "m", 5, head, parts) {
			_, suffix, ok := targetKey(k, string(kv.Key))
			require.True(t, ok)
			tk.apply("m", suffix, kv, mvccpb.PUT)
		}
		gen, got, st := tk.assemble()
		require.Equal(t, targetComplete, st)
		require.Equal(t, int64(7), gen)
		require.True(t, slices.Equal(syncs, got), "n=%d", n)
		require.True(t, tk.clean())
	}
}

func TestTargetKeyNeverCrossesMembers(t *testing.T) {
	k := testLayout(t)
	m, suffix, ok := targetKey(k, k.Target("a2")+"/0")
	require.True(t, ok)
	require.Equal(t, "a2", m)
	require.Equal(t, "/0", suffix)
	require.False(t, strings.HasPrefix(k.Target("a2"), k.TargetParts("a")))
	_, _, ok = targetKey(k, k.Targets()+"../x")
	require.False(t, ok)
}

// TestIncompleteTargetsAreNeverApplied: a member sees the keys of a split
// write one by one (parts, then the head, as the leader writes them, or in
// any order after a failure); it applies a target only once all its keys
// carry one generation.
func TestIncompleteTargetsAreNeverApplied(t *testing.T) {
	k := testLayout(t)
	log := slog.New(slog.DiscardHandler)
	oldHead, oldParts := splitTarget(1, ids(40), 200)
	newSyncs := ids(60)[45:]
	newHead, newParts := splitTarget(2, newSyncs, 200)
	require.Less(t, len(newParts), len(oldParts))
	require.Greater(t, len(newParts), 1)

	var mt memberTarget
	mt.read(k, "m", storeTarget(k, "m", 10, oldHead, oldParts))
	got, ok := mt.next(log)
	require.True(t, ok)
	require.Equal(t, ids(40), got)

	// Every order of the new keys: nothing is applied before the last one.
	newKVs := storeTarget(k, "m", 20, newHead, newParts) // head first
	n := len(newKVs)
	forward := append(slices.Clone(newKVs[1:]), newKVs[0]) // parts, then the head: as the leader writes
	backward := slices.Clone(newKVs)
	slices.Reverse(backward)
	for _, order := range [][]*mvccpb.KeyValue{forward, newKVs, backward} {
		var mt memberTarget
		mt.read(k, "m", storeTarget(k, "m", 10, oldHead, oldParts))
		_, _ = mt.next(log)
		var evs []*clientv3.Event
		for _, kv := range order[:n-1] {
			evs = append(evs, &clientv3.Event{Type: mvccpb.PUT, Kv: kv})
		}
		for _, ev := range evs {
			mt.events(k, []*clientv3.Event{ev})
			_, ok := mt.next(log)
			require.False(t, ok, "applied after %s only", ev.Kv.Key)
		}
		for _, kv := range newKVs {
			mt.events(k, []*clientv3.Event{{Type: mvccpb.PUT, Kv: kv}})
		}
		got, ok := mt.next(log)
		require.True(t, ok)
		require.Equal(t, newSyncs, got)
		// Deleting the stale parts changes nothing.
		for i := len(newParts); i < len(oldParts); i++ {
			mt.events(k, []*clientv3.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(k.Target("m") + partSuffix(i))}}})
			_, ok := mt.next(log)
			require.False(t, ok)
		}
		// Another member's keys are not ours.
		mt.events(k, []*clientv3.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(k.Target("m2")), Value: encodeTarget(9, nil)}}})
		_, ok = mt.next(log)
		require.False(t, ok)
	}
}

func TestChunkWritesStayWithinLimits(t *testing.T) {
	var ws []targetWrite
	for i := range 500 {
		ws = append(ws, targetWrite{member: "m", bytes: 1000 + 997*(i%300), ops: 1 + 2*(i%2)})
	}
	chunks, err := chunkWrites(ws)
	require.NoError(t, err)
	n := 0
	for _, c := range chunks {
		ops, bytes := 0, 0
		for _, w := range c {
			ops += w.ops
			bytes += w.bytes
		}
		require.LessOrEqual(t, ops, maxTxnOps)
		require.LessOrEqual(t, bytes, maxTxnBytes)
		n += len(c)
	}
	require.Equal(t, len(ws), n)
	_, err = chunkWrites([]targetWrite{{member: "m", bytes: maxTxnBytes + 1, ops: 1}})
	require.Error(t, err)
}

// leaderFaults, as an intercept of the leader's Txns (interceptLeaderKV),
// answers them with an error while fail is set: after applying them when
// applied is set (the reply was lost), else without. A Txn that writes
// status/leader only is never failed, nor counted.
type leaderFaults struct {
	fail, applied atomic.Bool
	failed        atomic.Int32
	onlyNth       atomic.Int32 // > 0: fail only the nth Txn from now
	seen          atomic.Int32
}

func (f *leaderFaults) intercept(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
	if tx.statusOnly() {
		return nil, nil, false
	}
	n := f.seen.Add(1)
	fail := f.fail.Load()
	if nth := f.onlyNth.Load(); nth > 0 {
		fail = n == nth
	}
	if !fail {
		return nil, nil, false
	}
	f.failed.Add(1)
	if f.applied.Load() {
		if _, err := tx.commit(tx.ctx); err != nil {
			return nil, err, true
		}
	}
	return nil, fmt.Errorf("injected: reply lost"), true
}

// setSmallTargets makes targets split at a few hundred bytes and Txns
// small, so a few dozen syncs need several Txns.
func setSmallTargets(t *testing.T) {
	oldValue, oldTxn := maxTargetValue, maxTxnBytes
	maxTargetValue, maxTxnBytes = 300, 1200
	t.Cleanup(func() { maxTargetValue, maxTxnBytes = oldValue, oldTxn })
}

func putSyncs(t *testing.T, cli *clientv3.Client, group string, n int) []string {
	s := NewSyncStore(cli, group)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := ids(n)
	for _, id := range out {
		require.NoError(t, s.Put(ctx, assignment.Sync{ID: id}))
	}
	return out
}

func ownedIDs(c *Coordinator) []string {
	var out []string
	for _, cl := range c.Owned() {
		out = append(out, cl.ID())
	}
	return out
}

// TestPlanWriteFailureIsReportedAndRepaired: a plan that cannot be written
// shows in Describe while it fails, and once etcd takes writes again the
// next round writes it and clears the report. A write that fails half way
// after being applied is repaired by the next round.
func TestPlanWriteFailureIsReportedAndRepaired(t *testing.T) {
	setSmallTargets(t)
	kv := &leaderFaults{}
	interceptLeaderKV(t, kv.intercept)
	kv.fail.Store(true)
	c, all := startLeader(t, "planerr", 40)
	cli := c.cli
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// While every target write fails: nothing owned, the error in
	// Describe.
	var st *GroupStatus
	var err error
	require.Eventually(t, func() bool {
		st, err = Describe(ctx, cli, "planerr")
		return err == nil && st.PlanError != ""
	}, 10*time.Second, 10*time.Millisecond, "no plan error in Describe")
	require.Contains(t, st.PlanError, "injected")
	require.Empty(t, c.Owned())
	// Then one Txn half way through the next write is applied but its
	// reply lost; all others go through.
	kv.applied.Store(true)
	kv.onlyNth.Store(kv.seen.Load() + 2)
	kv.fail.Store(false)
	require.Eventually(t, func() bool { return slices.Equal(all, ownedIDs(c)) }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		st, err = Describe(ctx, cli, "planerr")
		return err == nil && st.PlanError == "" && st.Pending == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.Positive(t, kv.failed.Load())
}

// TestTargetDeleteSparesReRegisteredMember: a leader whose view is stale
// (it has not seen m2 register again) must not delete m2's target: each
// delete is guarded on the member key being absent.
func TestTargetDeleteSparesReRegisteredMember(t *testing.T) {
	setSmallTargets(t) // m2's target is split: its parts must stay too
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := newHandLeader(t, ctx, "stale", 5)
	cli, k, sess := l.cli, l.k, l.sess

	// In etcd: m2 registered (again), with its target.
	syncs := putSyncs(t, cli, "stale", 30)
	head, parts := splitTarget(3, syncs, maxTargetValue)
	require.NotEmpty(t, parts)
	ops := []clientv3.Op{clientv3.OpPut(k.Member("m2"), string(encodeMember(assignment.Member{ID: "m2", Weight: 1}, false)), clientv3.WithLease(sess.Lease()))}
	for _, kv := range storeTarget(k, "m2", 0, head, parts) {
		ops = append(ops, clientv3.OpPut(string(kv.Key), string(kv.Value)))
	}
	_, err := cli.Txn(ctx).Then(ops...).Commit()
	require.NoError(t, err)
	before, err := cli.Get(ctx, k.Target("m2"), clientv3.WithPrefix())
	require.NoError(t, err)

	// The leader's view: from before m2 registered again.
	v, _, err := loadView(ctx, cli, k)
	require.NoError(t, err)
	delete(v.members, "m2")
	require.NoError(t, l.round(ctx, v))

	after, err := cli.Get(ctx, k.Target("m2"), clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, len(before.Kvs), len(after.Kvs), "m2's target keys after a round on a stale view")
	require.NotNil(t, v.targets["m2"], "the view keeps the target it could not delete")

	// Once m2 is gone for real, the next round deletes all its keys.
	_, err = cli.Delete(ctx, k.Member("m2"))
	require.NoError(t, err)
	require.NoError(t, l.round(ctx, v))
	after, err = cli.Get(ctx, k.Target("m2"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, after.Count)
	require.Nil(t, v.targets["m2"])
}
