package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/internal/wait"
)

// Coordinator is one member of a group: it holds the member's lease, runs
// the syncs the leader targets at it through the Handler, and campaigns to
// be the leader that balances the group.
//
// Make one with New, start it with Join, stop it with Leave (or by closing
// its etcd client, which stops it for good with every sync revoked).
type Coordinator struct {
	cli   *clientv3.Client
	group string
	h     Handler
	upd   Updater
	prep  Preparer
	o     options
	keys  keys.Layout
	log   *slog.Logger
	m     *metrics

	// mu guards the fields below it. Like every lock of the package it is
	// a leaf (see worker): nothing that takes another lock, and no etcd
	// request or callback, runs while it is held.
	mu        sync.Mutex
	joined    bool
	owned     map[string]*assignment.Claim
	changed   chan struct{} // closed and replaced on every ownership change
	w         *worker       // the current session's worker, nil between sessions
	rejoining bool          // a session was lost and the next one is not running yet

	// draining is set by Drain, or by a drain written into the member key
	// from outside; it is never cleared. The worker keeps the member key
	// in line with it.
	draining atomic.Bool

	// callbacks counts the goroutines that run Handler callbacks (actors,
	// Runner's run functions), by goroutine ID, so that Drain and Leave
	// called on one of them fail instead of waiting for themselves,
	// whatever ctx they are given. cbMu guards callbacks; a leaf (see worker).
	cbMu      sync.Mutex
	callbacks map[uint64]int

	leaveOnce    sync.Once
	leaveReq     context.Context // cancelled by Leave
	requestLeave context.CancelFunc
	leaveCtx     context.Context // Leave's ctx, set before leaveReq ends
	leaveOver    context.Context // cancelled once leaveCtx ends: what Leave waits for must stop
	endLeave     context.CancelFunc

	// balancerCalls tracks the Balancer call abandoned at its budget that
	// has not returned yet, over the coordinator's life.
	balancerCalls balancerCalls
	requestBound  atomic.Int64 // the leader's bound on its big requests, in ns (see leaderRequest)

	leader atomic.Bool

	done chan struct{}
	err  error
}

// New returns a Coordinator for member of group. It validates every
// setting (IDs, nil client or handler, TTL, RevokeTimeout < TTL/2, weight)
// and returns an error wrapping assignment.ErrInvalidID or saying which
// setting is wrong; it touches no etcd.
func New(cli *clientv3.Client, group string, h Handler, opts ...Option) (*Coordinator, error) {
	if cli == nil {
		return nil, errors.New("coordinator: New: nil etcd client")
	}
	if h == nil {
		return nil, errors.New("coordinator: New: nil Handler")
	}
	o := buildOptions(opts)
	var errs []error
	if err := keys.ValidateID("group", group); err != nil {
		errs = append(errs, fmt.Errorf("coordinator: New: %w", err))
	}
	if err := o.validateMember(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	layout, _ := keys.New(o.prefix, group)
	m, err := newMetrics(o.registerer, group, o.memberID)
	if err != nil {
		return nil, fmt.Errorf("coordinator: register metrics: %w", err)
	}
	c := &Coordinator{
		cli:       cli,
		group:     group,
		h:         h,
		o:         o,
		keys:      layout,
		log:       o.logger.With("group", group, "member", o.memberID),
		m:         m,
		owned:     map[string]*assignment.Claim{},
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
		callbacks: map[uint64]int{},
	}
	c.leaveReq, c.requestLeave = context.WithCancel(context.Background())
	c.leaveOver, c.endLeave = context.WithCancel(context.Background())
	c.upd, _ = h.(Updater)
	c.prep, _ = h.(Preparer)
	return c, nil
}

// MemberID returns this member's ID.
func (c *Coordinator) MemberID() string { return c.o.memberID }

// IsLeader reports whether this member is the group's leader right now.
func (c *Coordinator) IsLeader() bool { return c.leader.Load() }

// Done is closed when the coordinator has stopped for good: after Leave,
// or after its etcd client closed.
func (c *Coordinator) Done() <-chan struct{} { return c.done }

// Err says why the coordinator stopped: nil after a clean Leave, nil while
// it runs.
func (c *Coordinator) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Owned returns a snapshot of the claims this member holds now, sorted by
// sync ID. A claim is listed from the write of its owner key until its
// OnRevoke has returned, before the key is deleted: a sync whose owner key
// is gone from etcd is never listed.
func (c *Coordinator) Owned() []*assignment.Claim {
	c.mu.Lock()
	out := make([]*assignment.Claim, 0, len(c.owned))
	for _, cl := range c.owned {
		out = append(out, cl)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b *assignment.Claim) int {
		switch {
		case a.ID() < b.ID():
			return -1
		case a.ID() > b.ID():
			return 1
		}
		return 0
	})
	return out
}

// Join registers the member and starts its loops; it returns once the
// member is registered. ctx bounds registration only. If another live
// session holds the member ID, Join waits (logging why) until that session
// ends or ctx does, then returns ErrMemberIDInUse. An etcd error, or a
// request (the lease grant, the member key) with no answer within the TTL,
// fails Join; call it again.
func (c *Coordinator) Join(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed():
		c.mu.Unlock()
		return ErrClosed
	case c.joined:
		c.mu.Unlock()
		return ErrAlreadyJoined
	}
	c.joined = true
	c.mu.Unlock()
	sess, err := c.register(ctx)
	if err != nil {
		c.mu.Lock()
		c.joined = false
		c.mu.Unlock()
		return err
	}
	c.log.Info("joined", "lease", fmt.Sprintf("%x", int64(sess.id)), "ttl", sess.ttl)
	go c.run(sess)
	return nil
}

func (c *Coordinator) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// outcome is how one session's epoch ended.
type outcome int

const (
	sessionAtRisk outcome = iota
	clientClosed
	left
)

// run drives sessions until Leave or until the client closes; a lost
// session is replaced and the member registered again under the same ID.
func (c *Coordinator) run(sess *session) {
	defer close(c.done)
	defer c.requestLeave() // releases the context's resources
	for {
		switch c.epoch(sess) {
		case left:
			c.log.Info("left")
			return
		case clientClosed:
			c.err = fmt.Errorf("coordinator: etcd client closed: %w", context.Cause(c.cli.Ctx()))
			c.log.Warn("stopped", "error", c.err)
			return
		}
		c.mu.Lock()
		c.rejoining = true
		c.mu.Unlock()
		c.notify()
		c.log.Warn("session lost; joining again", "error", sess.Err())
		if sess = c.rejoin(); sess == nil {
			return
		}
	}
}

// rejoin registers the member again on a new session, until it works
// (the session), Leave is called or the client closes (nil; c.err is set
// for the latter).
func (c *Coordinator) rejoin() *session {
	ctx, cancel := context.WithCancel(c.cli.Ctx())
	defer cancel()
	stop := context.AfterFunc(c.leaveReq, cancel)
	defer stop()
	retry := wait.Backoff{Min: retryMin, Max: retryMax}
	for {
		s, err := c.register(ctx)
		switch {
		case err == nil:
			c.log.Info("joined again", "lease", fmt.Sprintf("%x", int64(s.id)))
			return s
		case c.clientClosed():
			c.err = fmt.Errorf("coordinator: etcd client closed: %w", context.Cause(c.cli.Ctx()))
			return nil
		case c.leaving():
			c.log.Info("left while rejoining")
			return nil
		}
		c.log.Warn("rejoin failed, retrying", "error", err)
		retry.Wait(ctx)
	}
}

func (c *Coordinator) leaving() bool { return c.leaveReq.Err() != nil }

// epoch runs the worker and the campaign on sess until the session is lost,
// the client closes, or Leave is called.
func (c *Coordinator) epoch(sess *session) outcome {
	ectx, cancel := context.WithCancel(context.Background())
	w := newWorker(ectx, c, sess)
	c.mu.Lock()
	c.w, c.rejoining = w, false
	c.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.run() }()
	go func() { defer wg.Done(); c.campaign(ectx, sess) }()

	out := c.awaitEpochEnd(sess)
	if out == left {
		// Leave's ctx bounds the rest: once it ends, the session is given
		// up, which ends the releases still retrying and the election's
		// cleanup; the lease revoke (or its expiry) frees what is left.
		// Found by the simulator (internal/sim).
		stop := context.AfterFunc(c.leaveOver, func() {
			c.log.Warn("leave: ctx ended before the member was done; giving the lease up")
			sess.markAtRisk(errLeaveDeadline)
		})
		defer stop()
		c.leaveGracefully(w, sess)
	}
	cancel()
	wg.Wait()
	c.mu.Lock()
	c.w = nil
	c.mu.Unlock()
	c.notify()

	c.endSession(sess, out)
	return out
}

// awaitEpochEnd waits until the session's lease is at risk, the client
// closes, or Leave is called, and says which.
func (c *Coordinator) awaitEpochEnd(sess *session) outcome {
	select {
	case <-sess.AtRisk():
		if c.clientClosed() {
			return clientClosed
		}
		return sessionAtRisk
	case <-c.cli.Ctx().Done():
		return clientClosed
	case <-c.leaveReq.Done():
		return left
	}
}

// endSession closes the session of an epoch that ended with out: after
// Leave it revokes the lease within Leave's ctx (which deregisters the
// member); after a lease at risk it revokes it if etcd can still be
// reached, so the syncs are free at once rather than at expiry; with the
// client closed it leaves the lease to expire.
func (c *Coordinator) endSession(sess *session, out outcome) {
	switch out {
	case left:
		sess.closeAndRevoke(c.leaveCtx)
	case sessionAtRisk:
		rctx, cancel := context.WithTimeout(context.Background(), c.o.revokeTimeout)
		defer cancel()
		sess.closeAndRevoke(rctx)
	default:
		sess.close()
	}
}

// leaveGracefully revokes every sync with reason Leaving and releases
// them, before the session is closed.
func (c *Coordinator) leaveGracefully(w *worker, sess *session) {
	w.leaveAll()
	for {
		ch := c.changedCh()
		if w.actorCount() == 0 {
			break
		}
		select {
		case <-ch:
		case <-sess.AtRisk(): // lost, or given up at Leave's deadline (see epoch)
			return
		}
	}
	// The member key goes with the lease, revoked once the worker and the
	// campaign have stopped (see epoch): a delete of the key alone could be
	// undone by a member-key write still on its way to etcd, while a write
	// on a revoked lease fails.
}

var errLeaveDeadline = errors.New("coordinator: Leave's ctx ended before the member was done")

// Drain asks the leader to move every sync away from this member and
// returns once it owns none and none is targeted at it. It returns ctx's
// error if that does not happen in time (for example when no other member
// can take the syncs). The member stays draining until it leaves.
func (c *Coordinator) Drain(ctx context.Context) error {
	if err := c.checkCall(ctx); err != nil {
		return err
	}
	return c.drain(ctx, drainToStay)
}

// drainPurpose says what a drain is for, which decides when it is done.
type drainPurpose int

const (
	drainToStay  drainPurpose = iota // Drain: the member lives on, drained
	drainToLeave                     // Leave: a member between sessions counts as drained
)

// drain marks the member draining (the worker writes it into the member
// key) and waits until it is drained.
func (c *Coordinator) drain(ctx context.Context, purpose drainPurpose) error {
	if !c.draining.Swap(true) {
		c.log.Info("draining")
	}
	c.mu.Lock()
	w := c.w
	c.mu.Unlock()
	if w != nil {
		poke(w.memberKick)
	}
	for {
		ch := c.changedCh()
		if c.drained(purpose) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("coordinator: drain: %w", ctx.Err())
		case <-c.done:
			return ErrClosed
		}
	}
}

// drained reports whether the member owns nothing, and its worker has an
// empty target, no actor, and a member key that says draining. To leave, a
// member between sessions also counts as drained: it owns nothing, and the
// session it had is gone.
func (c *Coordinator) drained(purpose drainPurpose) bool {
	hook(testHooks.drainCheck)
	c.mu.Lock()
	w, owned, rejoining := c.w, len(c.owned), c.rejoining
	c.mu.Unlock()
	if owned > 0 {
		return false
	}
	if w == nil {
		return purpose == drainToLeave && rejoining
	}
	// Until the member key says draining, the leader may target syncs
	// here at any moment.
	return w.idle() && w.drainShown.Load()
}

// Leave hands the member's syncs over and stops: it drains first when
// another member can take over, then revokes what is left with reason
// Leaving, releases it, resigns leadership and revokes the lease (which
// deregisters the member). It returns once every goroutine the coordinator
// started has ended, except a Balancer call abandoned at its budget (a
// Balancer that ignores its ctx is not waited for). ctx bounds the drain
// and the etcd calls; OnRevoke calls are always waited for. If ctx ends
// first (a ctx already done gets the revoke timeout), the member gives its
// lease up without waiting for the releases that are still failing: what
// it held is free once the lease revoke goes through, or at the lease's
// expiry, a TTL later.
func (c *Coordinator) Leave(ctx context.Context) error {
	if err := c.checkCall(ctx); err != nil {
		return err
	}
	drainErr := c.drainForLeave(ctx)
	stopOver := func() bool { return false }
	c.leaveOnce.Do(func() {
		if ctx.Err() != nil {
			// The etcd calls of a late Leave still get a short chance.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), c.o.revokeTimeout)
			defer func() { <-c.done; cancel() }()
		}
		c.leaveCtx = ctx
		stopOver = context.AfterFunc(ctx, c.endLeave)
		c.requestLeave()
	})
	<-c.done
	stopOver()
	if drainErr != nil && !errors.Is(drainErr, ErrClosed) {
		return fmt.Errorf("coordinator: left without a complete drain: %w", drainErr)
	}
	return nil
}

// drainForLeave drains while another live, non-draining member can take
// the syncs. It stops early, with no error, once none is left (members
// leaving together would otherwise each wait for the others until ctx ends).
func (c *Coordinator) drainForLeave(ctx context.Context) error {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var alone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c.awaitNoTakers(dctx) {
			alone.Store(true)
			cancel()
		}
	}()
	err := c.drain(dctx, drainToLeave)
	cancel()
	<-done
	if alone.Load() {
		return nil // nobody left to hand over to: Leave revokes what remains
	}
	return err
}

// awaitNoTakers returns true once no other live, non-draining member is
// registered, false if ctx ends first.
func (c *Coordinator) awaitNoTakers(ctx context.Context) bool {
	retry := wait.Backoff{Min: retryMin, Max: retryMax}
	for ctx.Err() == nil {
		if c.noTakers(ctx, &retry) {
			return ctx.Err() == nil
		}
		retry.Wait(ctx)
	}
	return false
}

// noTakers watches the members, then looks, again at each change: no
// membership change can fall between. It returns true once no other
// member can take the syncs over, false when a look fails (which proves
// nothing) or the watch breaks.
func (c *Coordinator) noTakers(ctx context.Context, retry *wait.Backoff) bool {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.cli.Watch(wctx, c.keys.Members(), clientv3.WithPrefix())
	for {
		others, err := c.othersCanTakeOver(ctx)
		switch {
		case err != nil:
			return false
		case !others:
			return true
		}
		retry.Reset()
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

func (c *Coordinator) checkCall(ctx context.Context) error {
	if ctx.Value(callbackKey{}) != nil || c.onCallbackGoroutine() {
		return ErrCalledFromCallback
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.joined {
		return ErrNotJoined
	}
	if c.closed() {
		return ErrClosed
	}
	return nil
}

// clientClosed reports whether the etcd client is closed: the coordinator
// then stops for good, and what it revokes gets reason Shutdown.
func (c *Coordinator) clientClosed() bool { return c.cli.Ctx().Err() != nil }

func (c *Coordinator) changedCh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// notify wakes everyone waiting for an ownership change.
func (c *Coordinator) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *Coordinator) addOwned(cl *assignment.Claim) {
	c.mu.Lock()
	c.owned[cl.ID()] = cl
	n := len(c.owned)
	c.mu.Unlock()
	c.m.setOwned(n)
	c.notify()
}

func (c *Coordinator) removeOwned(cl *assignment.Claim) {
	c.mu.Lock()
	if c.owned[cl.ID()] == cl {
		delete(c.owned, cl.ID())
	}
	n := len(c.owned)
	c.mu.Unlock()
	c.m.setOwned(n)
	c.notify()
}
