package coordinator_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
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
