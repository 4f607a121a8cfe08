package coordinator_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/rebalance"
)

// TestRoundWithNothingToDoWritesNothing: a lease-less member key (ignored
// as a member) beside a target of that member makes every round send a
// delete of the target that its guard (member key absent) refuses: the
// round logs "plan written", uses a generation, and counts as a change
// (so owner events trigger further rounds), although nothing changed.
func TestRoundWithNothingToDoWritesNothing(t *testing.T) {
	w := newWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	root := coordinator.DefaultPrefix + "/" + w.group + "/"
	_, err := w.admin.Put(ctx, root+"members/ghost", `{"weight":1}`) // no lease: not a member
	require.NoError(t, err)
	_, err = w.admin.Put(ctx, root+"targets/ghost", `{"generation":1,"syncs":[]}`)
	require.NoError(t, err)

	ids := syncIDs(3)
	w.putSyncs(ids...)
	written := &logWatch{text: "plan written", seen: make(chan struct{}, 1)}
	unchanged := &logWatch{text: "nothing to write", seen: make(chan struct{}, 1)}
	h := &fanout{hs: []slog.Handler{written, unchanged}}
	w.join("m1", nil, nil, coordinator.WithLogger(slog.New(h)))
	w.waitOwned(ids, 10*time.Second, "m1")

	// A spec change of an owned sync: a round that has nothing to move.
	for range 3 {
		drain(written.seen)
		drain(unchanged.seen)
		require.NoError(t, w.store.Put(ctx, assignment.Sync{ID: ids[0], Spec: []byte(`{"v":2}`)}))
		select {
		case <-unchanged.seen:
			return // the round wrote nothing
		case <-written.seen:
			gen := describe(t, w).Generation
			t.Logf("spec-only round wrote a plan (generation now %d)", gen)
		case <-time.After(10 * time.Second):
			t.Fatal("the spec Put caused no round")
		}
	}
	t.Fatal("every round with nothing to move sent a write (the ghost's target delete, refused by its guard)")
}

// fanout sends each record to several handlers.
type fanout struct{ hs []slog.Handler }

func (f *fanout) Enabled(context.Context, slog.Level) bool { return true }
func (f *fanout) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range f.hs {
		_ = h.Handle(ctx, r)
	}
	return nil
}
func (f *fanout) WithAttrs([]slog.Attr) slog.Handler { return f }
func (f *fanout) WithGroup(string) slog.Handler      { return f }

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// TestOuterLeaderLeavesANestedGroupAlone: a group whose prefix lies under
// another group's targets/ directory (prefix "/baton/<g>/targets", group
// "x": valid for ValidatePrefix and keys.New) has all its keys under
// "/baton/<g>/targets/x/". The outer leader reads them as stray keys of a
// member "x" and, as "x" is no member of its own group, deletes
// targets/x/ with a prefix: the nested group's specs (and its member,
// owner, election and checkpoint keys) are gone.
func TestOuterLeaderLeavesANestedGroupAlone(t *testing.T) {
	w := newWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inner := coordinator.NewSyncStore(w.admin, "x", coordinator.WithPrefix(coordinator.DefaultPrefix+"/"+w.group+"/targets"))
	require.NoError(t, inner.Put(ctx, assignment.Sync{ID: "inner-sync", Spec: []byte(`{"v":1}`)}))

	w.putSyncs("s000")
	w.join("m1", nil, nil)
	w.waitOwned([]string{"s000"}, 10*time.Second, "m1")

	got, err := inner.List(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1, "the nested group's syncs after one round of the outer leader")
}

// TestFailingSyncDoesNotRerunTheBalancer: a sync whose OnAssign always
// fails is claimed and given back on each retry. These owner events are
// no move in flight (the sync is never on another live member), yet while
// it is unowned movesInFlight says so, and each retry reruns the Balancer
// on the whole group; before the throttled-rollout change no owner event
// reran it once a round had nothing to write.
func TestFailingSyncDoesNotRerunTheBalancer(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(4)
	w.putSyncs(ids...)
	var calls atomic.Int32
	bal := rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		calls.Add(1)
		return rebalance.Sticky().Balance(ctx, in)
	})
	var attempts atomic.Int32
	h := w.handler("m1")
	assign := h.Assign
	h.Assign = func(ctx context.Context, c *assignment.Claim) error {
		if c.ID() == ids[0] {
			attempts.Add(1)
			return errors.New("always fails")
		}
		return assign(ctx, c)
	}
	revoke := h.Revoke
	h.Revoke = func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
		if c.ID() != ids[0] { // the recorder never saw it start
			revoke(ctx, c, why)
		}
	}
	w.join("m1", nil, h, coordinator.WithBalancer(bal))
	w.waitOwned(ids[1:], 10*time.Second, "m1")

	// Retries back off from 100ms: attempts 3 to 7 span about 6s.
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return attempts.Load() >= 3 }))
	before := calls.Load()
	require.True(t, etcdtest.WaitUntil(20*time.Second, func() bool { return attempts.Load() >= 7 }))
	after := calls.Load()
	require.LessOrEqual(t, after-before, int32(1),
		"Balancer calls while one sync's OnAssign failed 4 more times, nothing else changing")
}
