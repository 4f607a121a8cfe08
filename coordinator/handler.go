package coordinator

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/baton-go/baton/assignment"
)

// Handler receives ownership changes for the syncs of one member.
//
// Calls for one sync are serial: OnAssign, then any number of
// Updater.OnUpdate, then exactly one OnRevoke. Calls for different syncs run
// concurrently, each on a goroutine Baton owns. Every OnAssign is followed by
// exactly one OnRevoke, even when OnAssign returns an error (then with reason
// Failed), and OnRevoke never runs without an OnAssign before it.
//
// A panic in a callback is recovered and treated as an error.
//
// The *Claim: OnAssign, OnUpdate and OnRevoke of one ownership get the same
// *Claim. Without an Updater, a spec change is OnRevoke(SpecChanged) then
// OnAssign again with that same *Claim (same token), whose Sync() now
// returns the new spec. A *Claim may be kept after OnRevoke returns, and its
// methods stay safe to call, but it no longer proves anything: the owner key
// is released, so Guard fails in a Txn, SaveCheckpoint returns
// assignment.ErrNotOwner and Valid reports false; a later ownership of the
// sync, here or elsewhere, gets a new *Claim with a higher token.
//
// A callback that blocks holds up its own sync only: callbacks run on the
// sync's goroutine, so while OnAssign or OnUpdate has not returned, the
// sync gets no further callback — its revoke (a move, a drain, Leave, a
// lease at risk) and its spec changes wait for it, and so do Drain and
// Leave, which wait for every revoke. Other syncs go on meanwhile. An
// OnAssign that ignores its ctx past the claim's deadline delays the
// lease-lost revoke until it returns: only fenced writes (the token)
// protect downstream then.
//
// From a callback, the Coordinator's MemberID, IsLeader, Owned, Done and
// Err are safe to call, as are a Claim's methods, a SyncStore, an Admin and
// Describe. Drain and Leave are not (they wait for revokes, and would wait
// for themselves): they return ErrCalledFromCallback when called on a
// callback's goroutine or a Runner's run goroutine, whatever ctx they
// pass, or with a ctx derived from a callback's. A goroutine of your own
// that a callback waits for cannot be recognised: do not call them there.
type Handler interface {
	// OnAssign is called once this member holds the sync's owner key. ctx is
	// cancelled the moment ownership ends (before OnRevoke is called), so
	// work started here must stop when ctx is done. OnAssign should return
	// quickly: start the work on a goroutine (or use Runner). An error
	// (or panic) is followed by OnRevoke(Failed), the claim is released, and
	// the sync is claimed again after a backoff. The Claim proves ownership
	// until OnRevoke returns (see Handler on keeping it longer).
	OnAssign(ctx context.Context, c *assignment.Claim) error
	// OnRevoke is called when ownership ends, with the reason; it must stop
	// the sync's work before it returns. The claim is released (another
	// member may start) only after OnRevoke returns. For a planned revoke
	// (Rebalanced, Removed, SpecChanged, Draining, Leaving, Failed) ctx is
	// cancelled only if the lease comes at risk; for LeaseLost and Shutdown
	// its deadline is the claim's deadline, after which the sync counts as
	// given up whether or not OnRevoke has returned.
	OnRevoke(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason)
}

// Updater is an optional upgrade of Handler: a Handler that implements it
// receives spec changes of an owned sync in place, with the same claim and
// token, instead of OnRevoke(SpecChanged) followed by OnAssign. c.Sync()
// already returns the new spec. OnUpdate is serial with the sync's other
// callbacks; ctx is the one given to OnAssign.
type Updater interface {
	OnUpdate(ctx context.Context, c *assignment.Claim)
}

// Preparer is an optional upgrade of Handler for syncs whose start is
// expensive (opening a replication slot, loading a snapshot, warming a
// cache): before a sync moves here from another member, OnPrepare runs
// here while the current owner keeps running the sync, and the owner lets
// go once OnPrepare has returned, or after the prepare timeout
// (WithPrepareTimeout), whichever comes first. The sync's gap is then the
// plain handoff's, not its start-up.
//
// Preparing is not owning. OnPrepare gets the sync's spec, not a Claim:
// there is no token, and no fenced write can be made; another member runs
// the sync meanwhile. Do read-only work: connect, load, catch up.
//
// ctx is cancelled when the prepare is abandoned: the plan moved the sync
// elsewhere or kept it where it is, this member is leaving or its lease is
// at risk, or the prepare timeout passed. OnAssign follows once the owner
// has let go (the claim as usual) and OnPrepare has returned: a cancelled
// OnPrepare is waited for up to the revoke timeout, and one that ignores
// its ctx longer than that may still run when OnAssign comes. An error
// from OnPrepare is logged and counted, and the move goes on cold. A sync
// that comes here from no owner (a new sync, or one whose owner crashed)
// is not prepared: nobody runs it, so it is claimed at once.
//
// Only moves to members whose Handler implements Preparer wait; the
// others hand over exactly as before.
type Preparer interface {
	OnPrepare(ctx context.Context, s assignment.Sync) error
}

// HandlerFuncs implements Handler with functions; a nil field is a no-op.
type HandlerFuncs struct {
	Assign func(ctx context.Context, c *assignment.Claim) error
	Revoke func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason)
}

// OnAssign calls h.Assign if set.
func (h HandlerFuncs) OnAssign(ctx context.Context, c *assignment.Claim) error {
	if h.Assign == nil {
		return nil
	}
	return h.Assign(ctx, c)
}

// OnRevoke calls h.Revoke if set.
func (h HandlerFuncs) OnRevoke(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
	if h.Revoke != nil {
		h.Revoke(ctx, c, why)
	}
}

// callbackGoroutineKey carries, in the ctx given to OnAssign, the function
// that marks the calling goroutine as one that runs callbacks (used by
// Runner for its run goroutines), until the function it returns is called.
type callbackGoroutineKey struct{}

// failKey carries, in the ctx given to OnAssign, the function that reports
// an asynchronous failure of the sync's work (used by Runner).
type failKey struct{}

// reportFailure tells the coordinator that the work of the claim whose
// OnAssign ctx is ctx failed: it will be revoked with reason Failed.
func reportFailure(ctx context.Context, err error) {
	if f, ok := ctx.Value(failKey{}).(func(error)); ok {
		f(err)
	}
}

// Runner adapts a blocking function to a Handler: run is started on its own
// goroutine at OnAssign and must return once ctx is cancelled; OnRevoke
// waits for it to return. An error (or panic) from run while the sync is
// still owned is a failure: the sync is revoked with reason Failed, released
// and claimed again after a backoff. A nil return means the work is done;
// the sync stays owned (and idle) until it is revoked.
//
// Spec changes restart run with the new spec (Runner does not implement
// Updater).
func Runner(run func(ctx context.Context, c *assignment.Claim) error) Handler {
	return &runner{run: run, running: make(map[*assignment.Claim]chan struct{})}
}

type runner struct {
	run     func(ctx context.Context, c *assignment.Claim) error
	mu      sync.Mutex // guards running; a leaf (see worker)
	running map[*assignment.Claim]chan struct{}
}

func (r *runner) OnAssign(ctx context.Context, c *assignment.Claim) error {
	done := make(chan struct{})
	r.mu.Lock()
	r.running[c] = done
	r.mu.Unlock()
	go func() {
		defer close(done)
		if enter, ok := ctx.Value(callbackGoroutineKey{}).(func() func()); ok {
			defer enter()()
		}
		err := r.safeRun(ctx, c)
		if err != nil && ctx.Err() == nil {
			reportFailure(ctx, err)
		}
	}()
	return nil
}

func (r *runner) safeRun(ctx context.Context, c *assignment.Claim) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("coordinator: run of sync %q panicked: %v\n%s", c.ID(), p, debug.Stack())
		}
	}()
	return r.run(ctx, c)
}

func (r *runner) OnRevoke(ctx context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
	r.mu.Lock()
	done := r.running[c]
	delete(r.running, c)
	r.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
