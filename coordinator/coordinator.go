package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
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
	// whatever ctx they are given. cbMu is a leaf.
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
	if err := o.validate(true); err != nil {
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

// register starts a session and registers the member key with it.
func (c *Coordinator) register(ctx context.Context) (*session, error) {
	for {
		sess, err := newSession(ctx, c.cli, c.o.ttl, c.o.revokeTimeout, c.log, c.m)
		if err != nil {
			return nil, err
		}
		ok, err := c.registerMember(ctx, sess, c.draining.Load())
		if ok {
			return sess, nil
		}
		rctx, cancel := c.giveBackCtx(sess.ttl)
		sess.closeAndRevoke(rctx)
		cancel()
		if err != nil {
			return nil, err
		}
	}
}

// giveBackCtx bounds the revoke of a lease that could not be registered:
// by ttl, and by Leave's ctx if Leave is called, before or during the
// revoke (a Leave during a rejoin must not wait a TTL for it; a lease not
// revoked expires unused).
func (c *Coordinator) giveBackCtx(ttl time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), ttl)
	stop := context.AfterFunc(c.leaveOver, cancel)
	return ctx, func() { stop(); cancel() }
}

// registerMember creates members/<id> with the session's lease if absent
// (or present without a lease: written by hand, it is no live session's).
// It returns false with no error when the session was lost while waiting.
func (c *Coordinator) registerMember(ctx context.Context, s *session, draining bool) (bool, error) {
	key := c.keys.Member(c.o.memberID)
	val := c.memberValue(draining)
	for {
		// An absent key's lease compares as 0. The request is bounded by
		// the TTL: a rejoin runs on the client's context, with no deadline.
		tctx, tcancel := context.WithTimeout(ctx, c.o.ttl)
		resp, err := c.cli.Txn(tctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", 0)).
			Then(clientv3.OpPut(key, val, clientv3.WithLease(s.id))).
			Else(clientv3.OpGet(key)).Commit()
		tcancel()
		if err != nil {
			c.m.etcdError("register")
			return false, fmt.Errorf("coordinator: register member %q: %w", c.o.memberID, err)
		}
		if resp.Succeeded {
			return true, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) == s.id {
			return true, nil
		}
		holder := int64(0)
		if len(kvs) == 1 {
			holder = kvs[0].Lease
		}
		c.log.Warn("member ID held by another session; waiting for it to end", "holder_lease", fmt.Sprintf("%x", holder))
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := c.cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1))
		released := false
		for !released {
			select {
			case wr, ok := <-ch:
				if !ok || wr.Err() != nil {
					released = true // look again
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						released = true
					}
				}
			case <-ctx.Done():
				cancel()
				return false, fmt.Errorf("%w: %q is held by lease %x (%v)", ErrMemberIDInUse, c.o.memberID, holder, ctx.Err())
			case <-s.AtRisk():
				cancel()
				return false, nil
			}
		}
		cancel()
	}
}

// memberValue is what members/<id> holds for this member.
func (c *Coordinator) memberValue(draining bool) string {
	return string(encodeMember(assignment.Member{ID: c.o.memberID, Weight: c.o.weight, Labels: c.o.labels, Draining: draining}))
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
		// Rejoin until it works, Leave is called, or the client closes.
		ctx, cancel := context.WithCancel(c.cli.Ctx())
		stop := context.AfterFunc(c.leaveReq, cancel)
		delay := retryMin
		sess = nil
		for sess == nil {
			s, err := c.register(ctx)
			switch {
			case err == nil:
				sess = s
				c.log.Info("joined again", "lease", fmt.Sprintf("%x", int64(s.id)))
			case c.clientClosed():
				stop()
				cancel()
				c.err = fmt.Errorf("coordinator: etcd client closed: %w", context.Cause(c.cli.Ctx()))
				return
			case c.leaving():
				stop()
				cancel()
				c.log.Info("left while rejoining")
				return
			default:
				c.log.Warn("rejoin failed, retrying", "error", err)
				sleepCtx(ctx, delay)
				delay = min(2*delay, retryMax)
			}
		}
		stop()
		cancel()
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

	var out outcome
	select {
	case <-sess.AtRisk():
		out = sessionAtRisk
	case <-c.cli.Ctx().Done():
		out = clientClosed
	case <-c.leaveReq.Done():
		out = left
	}
	if out == sessionAtRisk && c.clientClosed() {
		out = clientClosed
	}
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

	switch out {
	case left:
		sess.closeAndRevoke(c.leaveCtx)
	case sessionAtRisk:
		// Give the lease back if etcd can still be reached, so the syncs
		// are free at once rather than at expiry.
		rctx, rcancel := context.WithTimeout(context.Background(), c.o.revokeTimeout)
		sess.closeAndRevoke(rctx)
		rcancel()
	default:
		sess.close()
	}
	return out
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
	return c.drain(ctx, false)
}

// drain marks the member draining (the worker writes it into the member
// key) and waits until it is drained; for Leave, a member between sessions
// also counts as drained: it owns nothing, and the session it had is gone.
func (c *Coordinator) drain(ctx context.Context, leaving bool) error {
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
		if c.drained(leaving) {
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
// empty target, no actor, and a member key that says draining.
func (c *Coordinator) drained(leaving bool) bool {
	hook(testHooks.drainCheck)
	c.mu.Lock()
	w, owned, rejoining := c.w, len(c.owned), c.rejoining
	c.mu.Unlock()
	if owned > 0 {
		return false
	}
	if w == nil {
		return leaving && rejoining
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
	alone := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		delay := retryMin
		for dctx.Err() == nil {
			// Watch first, then look: no membership change can fall
			// between. A look that fails proves nothing (the drain goes
			// on); a watch that breaks is set up again.
			wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(dctx))
			wch := c.cli.Watch(wctx, c.keys.Members(), clientv3.WithPrefix())
		look:
			for {
				others, err := c.othersCanTakeOver(dctx)
				if err == nil && !others {
					wcancel()
					if dctx.Err() == nil {
						close(alone)
						cancel()
					}
					return
				}
				if err != nil {
					break look
				}
				delay = retryMin
				select {
				case wr, ok := <-wch:
					if !ok || wr.Err() != nil {
						break look
					}
				case <-dctx.Done():
					break look
				}
			}
			wcancel()
			sleepCtx(dctx, delay)
			delay = min(2*delay, retryMax)
		}
	}()
	err := c.drain(dctx, true)
	cancel()
	<-done
	select {
	case <-alone:
		return nil // nobody left to hand over to: Leave revokes what remains
	default:
		return err
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

// othersCanTakeOver reports whether another live, non-draining member is
// registered.
func (c *Coordinator) othersCanTakeOver(ctx context.Context) (bool, error) {
	resp, err := c.cli.Get(ctx, c.keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return false, err
	}
	for _, kv := range resp.Kvs {
		id, ok := keys.ID(c.keys.Members(), string(kv.Key))
		if !ok || id == c.o.memberID || kv.Lease == 0 {
			continue // a key without a lease is no live member
		}
		if m, err := decodeMember(id, kv.Value); err == nil && !m.Draining {
			return true, nil
		}
	}
	return false, nil
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

// callbackKey marks the contexts given to callbacks, so Drain and Leave
// called from inside one fail instead of deadlocking, even from another
// goroutine the callback waits for.
type callbackKey struct{}

// enterCallbackGoroutine records that the calling goroutine runs callbacks
// until the returned function is called.
func (c *Coordinator) enterCallbackGoroutine() (leave func()) {
	id := goroutineID()
	c.cbMu.Lock()
	c.callbacks[id]++
	c.cbMu.Unlock()
	return func() {
		c.cbMu.Lock()
		if c.callbacks[id]--; c.callbacks[id] == 0 {
			delete(c.callbacks, id)
		}
		c.cbMu.Unlock()
	}
}

func (c *Coordinator) onCallbackGoroutine() bool {
	id := goroutineID()
	c.cbMu.Lock()
	defer c.cbMu.Unlock()
	return c.callbacks[id] > 0
}

// goroutineID returns the ID of the calling goroutine, read from the first
// line of its stack ("goroutine 123 [running]:"). Go offers no API for it
// on purpose; it is used here only to refuse Drain and Leave on a callback
// goroutine, which a ctx value cannot do when the callback passes another
// ctx. Goroutine IDs are never reused.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

func (c *Coordinator) callAssign(ctx context.Context, cl *assignment.Claim) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("coordinator: OnAssign of %q panicked: %v\n%s", cl.ID(), p, debug.Stack())
		}
		if err != nil {
			c.m.callbackError("assign")
		}
	}()
	ctx = context.WithValue(ctx, callbackKey{}, true)
	ctx = context.WithValue(ctx, callbackGoroutineKey{}, c.enterCallbackGoroutine)
	return c.h.OnAssign(ctx, cl)
}

func (c *Coordinator) callUpdate(ctx context.Context, cl *assignment.Claim) {
	defer func() {
		if p := recover(); p != nil {
			c.m.callbackError("update")
			c.log.Error("OnUpdate panicked", "sync", cl.ID(), "panic", p, "stack", string(debug.Stack()))
		}
	}()
	c.upd.OnUpdate(context.WithValue(ctx, callbackKey{}, true), cl)
}

func (c *Coordinator) callRevoke(ctx context.Context, cl *assignment.Claim, why assignment.RevokeReason) {
	defer func() {
		if p := recover(); p != nil {
			c.m.callbackError("revoke")
			c.log.Error("OnRevoke panicked", "sync", cl.ID(), "panic", p, "stack", string(debug.Stack()))
		}
	}()
	c.h.OnRevoke(context.WithValue(ctx, callbackKey{}, true), cl, why)
}

// revoke is a planned revoke: OnRevoke may take as long as it needs (the
// claim is still held, so nobody else can start), but its ctx ends if the
// lease comes at risk, and an overrun of RevokeTimeout is logged and counted.
func (c *Coordinator) revoke(s *session, cl *assignment.Claim, why assignment.RevokeReason) {
	start := time.Now()
	c.callRevoke(s.atRisk, cl, why)
	took := time.Since(start)
	overrun := took > c.o.revokeTimeout
	switch {
	case s.isAtRisk() && time.Now().After(cl.Deadline()):
		// The lease came at risk while OnRevoke ran, and it did not stop
		// by the deadline: another member may be running the sync.
		c.log.Error("OnRevoke returned after the ownership deadline; only fencing protects downstream writes now",
			"sync", cl.ID(), "token", cl.Token(), "reason", why.String(), "took", took)
	case overrun:
		c.log.Warn("OnRevoke overran the revoke timeout", "sync", cl.ID(), "token", cl.Token(), "reason", why.String(), "took", took)
	}
	c.m.revoked(why, overrun)
}

// revokeHard is a revoke forced by the lease: its budget ends at the
// claim's deadline, after which the sync counts as given up.
func (c *Coordinator) revokeHard(cl *assignment.Claim, why assignment.RevokeReason) {
	ctx, cancel := context.WithDeadline(context.Background(), cl.Deadline())
	defer cancel()
	c.callRevoke(ctx, cl, why)
	overrun := time.Now().After(cl.Deadline())
	if overrun {
		c.log.Error("OnRevoke returned after the ownership deadline; only fencing protects downstream writes now", "sync", cl.ID(), "token", cl.Token(), "reason", why.String())
	}
	c.log.Warn("revoked", "sync", cl.ID(), "token", cl.Token(), "reason", why.String())
	c.m.revoked(why, overrun)
}
