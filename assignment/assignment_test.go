package assignment_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/claimsync"
	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// owner creates key on a fresh lease, as a member's claim does, and returns
// the key's create revision: the token.
func owner(t *testing.T, ctx context.Context, cli *clientv3.Client, key, member string) int64 {
	t.Helper()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, member)).Commit()
	require.NoError(t, err)
	require.True(t, resp.Succeeded, "%s is held", key)
	return resp.Header.Revision
}

// deadline is a claim deadline a test can move.
type deadline struct{ at atomic.Int64 }

func newDeadline(d time.Duration) *deadline {
	dl := &deadline{}
	dl.set(time.Now().Add(d))
	return dl
}
func (d *deadline) set(t time.Time)      { d.at.Store(t.UnixNano()) }
func (d *deadline) get() time.Time       { return time.Unix(0, d.at.Load()) }
func (d *deadline) expire()              { d.set(time.Now().Add(-time.Millisecond)) }
func (d *deadline) fn() func() time.Time { return d.get }

func TestNewClaimNeedsFencingFields(t *testing.T) {
	// NewClaim touches no etcd: any non-nil KV does.
	kv := clientv3.NewKVFromKVClient(nil, nil)
	dl := newDeadline(time.Minute)
	ok := assignment.ClaimConfig{KV: kv, OwnerKey: "/o/s", Token: 5, Deadline: dl.fn(), Sync: assignment.Sync{ID: "s"}}
	_, err := assignment.NewClaim(ok)
	require.NoError(t, err)
	for name, mut := range map[string]func(*assignment.ClaimConfig){
		"no KV":          func(c *assignment.ClaimConfig) { c.KV = nil },
		"no owner key":   func(c *assignment.ClaimConfig) { c.OwnerKey = "" },
		"zero token":     func(c *assignment.ClaimConfig) { c.Token = 0 },
		"negative token": func(c *assignment.ClaimConfig) { c.Token = -1 },
		"no deadline":    func(c *assignment.ClaimConfig) { c.Deadline = nil },
	} {
		cfg := ok
		mut(&cfg)
		_, err := assignment.NewClaim(cfg)
		assert.ErrorContains(t, err, `assignment: claim for "s" needs`, name)
	}
}

// TestClaimFencing walks one sync through two owners and checks that every
// fenced operation of the first fails once the second holds it, and that
// a passed local deadline fences even while etcd still has the key.
func TestClaimFencing(t *testing.T) {
	cl := etcdtest.NewCluster(t, 1)
	cli := cl.Client(t)
	ctx := ctxFor(t, 20*time.Second)
	const ownerKey, cpKey = "/baton/g/owners/db-1", "/baton/g/checkpoints/db-1"

	tok1 := owner(t, ctx, cli, ownerKey, "m1")
	dl1 := newDeadline(time.Minute)
	c1, err := assignment.NewClaim(assignment.ClaimConfig{
		KV: cli, OwnerKey: ownerKey, CheckpointKey: cpKey, Member: "m1", Token: tok1,
		Deadline: dl1.fn(), Sync: assignment.Sync{ID: "db-1", Spec: []byte(`{"table":"t"}`)},
	})
	require.NoError(t, err)
	assert.Equal(t, "db-1", c1.ID())
	assert.Equal(t, "m1", c1.Member())
	assert.Equal(t, tok1, c1.Token())
	assert.Equal(t, dl1.get(), c1.Deadline())
	assert.Equal(t, "claim{sync=db-1 member=m1 token="+strconv.FormatInt(tok1, 10)+"}", c1.String())

	cp, err := c1.LoadCheckpoint(ctx)
	require.NoError(t, err)
	assert.Nil(t, cp, "no checkpoint was ever saved")
	valid, err := c1.Valid(ctx)
	require.NoError(t, err)
	assert.True(t, valid)
	require.NoError(t, c1.SaveCheckpoint(ctx, []byte("pos=10")))

	// Guard in a user's own Txn.
	resp, err := cli.Txn(ctx).If(c1.Guard()).Then(clientv3.OpPut("/app/out", "from m1")).Commit()
	require.NoError(t, err)
	assert.True(t, resp.Succeeded)

	// m1 lets go; m2 claims: a new, larger token.
	_, err = cli.Txn(ctx).If(c1.Guard()).Then(clientv3.OpDelete(ownerKey)).Commit()
	require.NoError(t, err)
	tok2 := owner(t, ctx, cli, ownerKey, "m2")
	require.Greater(t, tok2, tok1)
	c2, err := assignment.NewClaim(assignment.ClaimConfig{
		KV: cli, OwnerKey: ownerKey, CheckpointKey: cpKey, Member: "m2", Token: tok2,
		Deadline: newDeadline(time.Minute).fn(), Sync: assignment.Sync{ID: "db-1"},
	})
	require.NoError(t, err)
	cp, err = c2.LoadCheckpoint(ctx)
	require.NoError(t, err)
	assert.Equal(t, "pos=10", string(cp), "the new owner resumes where the old one stopped")

	// The zombie m1: every fenced operation fails, nothing is written.
	valid, err = c1.Valid(ctx)
	require.NoError(t, err)
	assert.False(t, valid)
	assert.ErrorIs(t, c1.SaveCheckpoint(ctx, []byte("pos=11 (zombie)")), assignment.ErrNotOwner)
	resp, err = cli.Txn(ctx).If(c1.Guard()).Then(clientv3.OpPut("/app/out", "zombie")).Commit()
	require.NoError(t, err)
	assert.False(t, resp.Succeeded)
	require.NoError(t, c2.SaveCheckpoint(ctx, []byte("pos=20")))
	cp, err = c1.LoadCheckpoint(ctx)
	require.NoError(t, err)
	assert.Equal(t, "pos=20", string(cp))

	// m2's local deadline passes while etcd still holds its key (a paused
	// process whose lease has not expired yet): it is fenced locally.
	dl2 := newDeadline(time.Minute)
	c2b, err := assignment.NewClaim(assignment.ClaimConfig{
		KV: cli, OwnerKey: ownerKey, CheckpointKey: cpKey, Member: "m2", Token: tok2,
		Deadline: dl2.fn(), Sync: assignment.Sync{ID: "db-1"},
	})
	require.NoError(t, err)
	dl2.expire()
	valid, err = c2b.Valid(ctx)
	require.NoError(t, err)
	assert.False(t, valid)
	assert.ErrorIs(t, c2b.SaveCheckpoint(ctx, []byte("late")), assignment.ErrNotOwner)
	cp, err = c2.LoadCheckpoint(ctx)
	require.NoError(t, err)
	assert.Equal(t, "pos=20", string(cp), "a fenced save wrote nothing")

	// A claim made without a checkpoint key says so.
	c3, err := assignment.NewClaim(assignment.ClaimConfig{KV: cli, OwnerKey: ownerKey, Token: tok2, Deadline: dl1.fn(), Sync: assignment.Sync{ID: "db-1"}})
	require.NoError(t, err)
	assert.ErrorContains(t, c3.SaveCheckpoint(ctx, nil), "no checkpoint key")
	_, err = c3.LoadCheckpoint(ctx)
	assert.ErrorContains(t, err, "no checkpoint key")
}

func TestClaimEtcdErrorsAreWrapped(t *testing.T) {
	cl := etcdtest.NewCluster(t, 1)
	cli := cl.Client(t)
	c, err := assignment.NewClaim(assignment.ClaimConfig{
		KV: cli, OwnerKey: "/o/s", CheckpointKey: "/c/s", Token: 1,
		Deadline: newDeadline(time.Minute).fn(), Sync: assignment.Sync{ID: "s"},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Valid(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorContains(t, err, `assignment: check claim on "s"`)
	err = c.SaveCheckpoint(ctx, []byte("x"))
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, errors.Is(err, assignment.ErrNotOwner), "an etcd error is not a lost claim")
	_, err = c.LoadCheckpoint(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestClaimSyncIsACopy(t *testing.T) {
	c, err := assignment.NewClaim(assignment.ClaimConfig{
		KV: clientv3.NewKVFromKVClient(nil, nil), OwnerKey: "/o/s", Token: 1,
		Deadline: newDeadline(time.Minute).fn(),
		Sync:     assignment.Sync{ID: "s", Labels: map[string]string{"a": "1"}, Spec: []byte("v1")},
	})
	require.NoError(t, err)
	s := c.Sync()
	s.Labels["a"] = "changed"
	s.Spec[0] = 'X'
	assert.Equal(t, "1", c.Sync().Labels["a"])
	assert.Equal(t, "v1", string(c.Sync().Spec))

	next := assignment.Sync{ID: "s", Spec: []byte("v2"), Revision: 9}
	claimsync.Set(c, next)
	next.Spec[0] = 'Y'
	assert.Equal(t, "v2", string(c.Sync().Spec))
	assert.EqualValues(t, 9, c.Sync().Revision)
}

func TestRevokeReason(t *testing.T) {
	want := map[assignment.RevokeReason]string{
		assignment.Rebalanced: "rebalanced", assignment.Removed: "removed",
		assignment.SpecChanged: "spec-changed", assignment.Draining: "draining",
		assignment.Leaving: "leaving", assignment.LeaseLost: "lease-lost",
		assignment.Failed: "failed", assignment.Shutdown: "shutdown",
	}
	all := assignment.Reasons()
	require.Len(t, all, len(want))
	for _, r := range all {
		assert.Equal(t, want[r], r.String())
	}
	assert.Equal(t, "RevokeReason(0)", assignment.RevokeReason(0).String())
	assert.Equal(t, "RevokeReason(99)", assignment.RevokeReason(99).String())
	for _, r := range all {
		planned := r != assignment.LeaseLost && r != assignment.Shutdown
		assert.Equal(t, planned, r.Planned(), r.String())
	}
}

func TestPlan(t *testing.T) {
	p := assignment.Plan{"a": "m1", "b": "m1", "c": "m2"}
	next := assignment.Plan{"a": "m1", "b": "m2", "d": "m3"}
	// b moved, c unassigned, d assigned.
	assert.Equal(t, 3, p.Moves(next))
	assert.Equal(t, 3, next.Moves(p))
	assert.Equal(t, 0, p.Moves(p))
	assert.Equal(t, 3, assignment.Plan(nil).Moves(p))

	cp := p.Clone()
	cp["a"] = "m9"
	assert.Equal(t, "m1", p["a"])
	assert.NotNil(t, assignment.Plan(nil).Clone())

	by := p.ByMember()
	assert.ElementsMatch(t, []string{"a", "b"}, by["m1"])
	assert.Equal(t, []string{"c"}, by["m2"])
}

func TestWeightsAndClones(t *testing.T) {
	for w, eff := range map[int]int{-3: 1, 0: 1, 1: 1, 7: 7} {
		assert.Equal(t, eff, assignment.Sync{Weight: w}.EffectiveWeight())
		assert.Equal(t, eff, assignment.Member{Weight: w}.EffectiveWeight())
	}
	m := assignment.Member{ID: "m", Labels: map[string]string{"zone": "a"}}
	mc := m.Clone()
	mc.Labels["zone"] = "b"
	assert.Equal(t, "a", m.Labels["zone"])
	s := assignment.Sync{ID: "s"}
	assert.Nil(t, s.Clone().Spec, "a nil spec stays nil")
}
