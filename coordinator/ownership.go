package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/claimsync"
	"github.com/baton-go/baton/internal/wait"
)

// Ownership of one sync on one member, step by step, as an actor runs it:
//
//  1. claim: create owners/<sync> on the session's lease if it is free
//     (claim), or wait for its holder to let go (waitRelease);
//  2. assign: hand the claim to the Handler (own, hold);
//  3. update: pass spec changes on while it is owned (ownedLoop);
//  4. revoke: call OnRevoke, with a budget that depends on why (revoke);
//  5. release: delete the owner key (giveBack, deleteOwner).
//
// Then again, for as long as the sync is wanted here.

// actor runs one sync's lifecycle on its own goroutine, so that callbacks
// for one sync are serial and different syncs never wait for each other.
// An actor stays in worker.actors until it holds no owner key, so a sync
// never has two actors on one member: no key is adopted while its release
// is pending. Its fields are guarded by worker.mu.
type actor struct {
	id      string
	want    bool
	reason  assignment.RevokeReason // why, once want is false
	spec    *assignment.Sync        // newest spec seen by the syncs watch
	failure error                   // reported by a Runner's run function
	since   time.Time               // when want last became true
	kick    chan struct{}           // capacity 1: "look at your fields again"
	// A prepared handoff: once want is false, the sync goes to handoffTo
	// (a Preparer), announced by the target of generation handoffGen,
	// seen at leftAt. Empty while none is announced.
	handoffTo  string
	handoffGen int64
	leftAt     time.Time
}

// actorRun is what an actor's goroutine carries from one step to the next;
// only that goroutine uses it.
type actorRun struct {
	a *actor
	// held is a claim whose owner key may be this session's: it is given
	// back before the actor leaves the worker's map, never after.
	held *claimResult
	// retry paces claims whose answer was lost; failures paces the claims
	// that follow a failed OnAssign or run.
	retry, failures wait.Backoff
	// releasedAt is when the previous holder's release was seen, for the
	// handoff metric; zero when the claim followed no release.
	releasedAt time.Time
	// preparedFor is the actor's since when OnPrepare last ran for it (a
	// sync is prepared once each time it becomes wanted here); preparing
	// is closed once that OnPrepare has returned.
	preparedFor time.Time
	preparing   chan struct{}
}

// runActor drives one sync through the steps above until it is neither
// wanted here nor holds an owner key. held is a claim already made for it,
// if any (see actorRun.held).
func (w *worker) runActor(a *actor, held *claimResult) {
	defer w.actorsWG.Done()
	defer w.c.notify()
	stop := w.c.enterCallbackGoroutine()
	defer stop()
	if testHooks.actorStart != nil {
		testHooks.actorStart(a.id)
	}
	r := &actorRun{
		a:        a,
		held:     held,
		retry:    wait.Backoff{Min: retryMin, Max: retryMax},
		failures: wait.Backoff{Min: failBackoffMin, Max: failBackoffMax},
	}
	for w.actorStep(r) {
	}
}

// actorStep takes one step: it releases a key no longer wanted, or claims
// the sync and acts on what the claim found. It returns false once the
// actor has left the worker's map.
func (w *worker) actorStep(r *actorRun) bool {
	a := r.a
	w.mu.Lock()
	want := a.want && w.ctx.Err() == nil && !w.sess.isAtRisk()
	if !want && !r.held.mayHold() {
		delete(w.actors, a.id)
		w.mu.Unlock()
		return false
	}
	since := a.since
	w.mu.Unlock()
	if !want {
		if testHooks.giveBack != nil {
			testHooks.giveBack(a.id)
		}
		w.giveBack(a.id, r.held)
		r.held = nil
		return true // the sync may be wanted again meanwhile
	}
	res, ok := w.claimOne(r)
	if !ok {
		return true
	}
	switch {
	case res.held && res.syncErr != nil:
		// Claimed a sync whose spec is unreadable (or that vanished):
		// never hand it to the handler; give it back and wait for the
		// leader to drop it from the target.
		r.held = res
		w.markGone(a, res)
	case res.held:
		return w.ownClaimed(r, res, since)
	case res.syncErr != nil:
		w.markGone(a, res)
	case res.taken:
		w.awaitHolder(r, w.startPrepare(r, res, since))
	default:
		wait.SleepOrWake(w.ctx, retryMin, a.kick)
	}
	return true
}

// claimOne returns the claim to act on: the one held if it is known and
// found a readable spec, else a new claim's. A result that found the spec
// unreadable is not acted on twice: the spec may have been fixed since
// (markGone refused to act on it), and a new claim reads it again. ok is
// false when the claim's answer was lost: it may have gone through, so it
// is held as unknown, and retried after a backoff.
func (w *worker) claimOne(r *actorRun) (res *claimResult, ok bool) {
	res, r.held = r.held, nil
	if res == nil || res.unknown || res.syncErr != nil {
		rs, err := w.claim([]string{r.a.id})
		if err != nil {
			r.held = &claimResult{unknown: true}
			r.retry.WaitOrWake(w.ctx, r.a.kick)
			return nil, false
		}
		res = rs[r.a.id]
	}
	r.retry.Reset()
	return res, true
}

// ownClaimed runs a claimed sync (own) and paces what follows by why its
// ownership ended. It returns false when the key could not be given back:
// the lease is at risk or gone and takes the key with it, so the actor
// has left the worker's map.
func (w *worker) ownClaimed(r *actorRun, res *claimResult, since time.Time) bool {
	a := r.a
	handoff := time.Duration(-1)
	if !r.releasedAt.IsZero() {
		handoff = time.Since(r.releasedAt)
	}
	w.c.m.claimed(time.Since(since), handoff)
	r.releasedAt = time.Time{}
	why, released := w.own(a, res)
	if !released {
		w.mu.Lock()
		delete(w.actors, a.id)
		w.mu.Unlock()
		return false
	}
	switch {
	case !why.Planned():
		// Not assigned: the lease came at risk. Either the session ends
		// very soon, or a renewal answered late and it lives on; do not
		// spin meanwhile.
		wait.Sleep(w.sess.atRisk, retryMin)
	case why == assignment.Failed:
		r.failures.WaitOrWake(w.ctx, a.kick)
		w.mu.Lock()
		a.since = time.Now() // the retry's claim wait starts now
		w.mu.Unlock()
	default:
		r.failures.Reset()
	}
	return true
}

// awaitHolder waits for the sync's holder to let go (waitRelease) and
// keeps the claim it then made, if any.
func (w *worker) awaitHolder(r *actorRun, p *preparation) {
	defer p.stop()
	r.releasedAt = time.Time{}
	next, released, err := w.waitRelease(r.a, p)
	switch {
	case err != nil:
		r.held = &claimResult{unknown: true}
	case next != nil:
		r.held = next
		if released {
			r.releasedAt = time.Now()
		}
	}
}

// Step 1: claim.

// claimResult is what one claim attempt learned about one sync.
type claimResult struct {
	// held: this session holds owners/<sync> with token, claimed just now
	// or found on its lease already (a claim whose answer was lost: it is
	// adopted).
	held bool
	// taken: another session holds owners/<sync> (token is its).
	taken  bool
	token  int64  // create revision of the owner key
	holder string // the member ID in the owner key, when taken

	sync    assignment.Sync
	syncErr error // the sync is gone or its spec cannot be read
	// specRev is the revision syncErr is true at: the unreadable spec's
	// mod revision, or the claim's revision for a missing one.
	specRev int64

	// unknown: a claim was sent but its answer was an error or never
	// came, so it may have gone through. Only the session's lease can
	// tell: the actor claims again (and adopts the key as mine) or gives
	// back whatever key of this sync is on the lease.
	unknown bool
}

// mayHold reports whether the owner key may be this session's after r.
func (r *claimResult) mayHold() bool { return r != nil && (r.held || r.unknown) }

// claim tries to claim every sync in ids. Each sync is one nested Txn with
// its own guard (claim if free, else read the holder), so one held sync
// never fails the others' claims; the nested Txns of every claim the
// worker's actors make meanwhile share Txns (see txnBatcher). The result
// has an entry for every id unless err is set.
func (w *worker) claim(ids []string) (map[string]*claimResult, error) {
	k := w.c.keys
	reqs := make([]batchReq, len(ids))
	for i, id := range ids {
		reqs[i] = batchReq{key: k.Owner(id), op: clientv3.OpTxn(
			[]clientv3.Cmp{
				clientv3.Compare(clientv3.CreateRevision(k.Owner(id)), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(k.Sync(id)), ">", 0),
			},
			[]clientv3.Op{clientv3.OpPut(k.Owner(id), w.c.o.memberID, clientv3.WithLease(w.sess.id)), clientv3.OpGet(k.Sync(id))},
			[]clientv3.Op{clientv3.OpGet(k.Owner(id)), clientv3.OpGet(k.Sync(id))},
		)}
	}
	res := w.claimTxns.do(reqs)
	out := make(map[string]*claimResult, len(ids))
	for i, id := range ids {
		if res[i].err != nil {
			w.c.m.etcdError("claim")
			return nil, fmt.Errorf("coordinator: claim: %w", res[i].err)
		}
		resp, rev := res[i].resp, res[i].rev
		r := &claimResult{}
		syncKVs := resp.Responses[1].GetResponseRange().Kvs
		if len(syncKVs) == 0 {
			r.syncErr, r.specRev = fmt.Errorf("coordinator: sync %q does not exist", id), rev
		} else {
			r.sync, r.syncErr = decodeSync(id, syncKVs[0].Value, syncKVs[0].ModRevision)
			r.specRev = syncKVs[0].ModRevision
		}
		if resp.Succeeded {
			// A put in a Txn has the Txn's revision as create revision.
			r.held, r.token = true, rev
			out[id] = r
			continue
		}
		ownerKVs := resp.Responses[0].GetResponseRange().Kvs
		switch {
		case len(ownerKVs) == 1 && clientv3.LeaseID(ownerKVs[0].Lease) == w.sess.id:
			r.held, r.token = true, ownerKVs[0].CreateRevision
		case len(ownerKVs) == 1:
			// Another session's, or written by hand: wait for it either way.
			r.taken, r.token, r.holder = true, ownerKVs[0].CreateRevision, string(ownerKVs[0].Value)
		}
		out[id] = r
	}
	return out, nil
}

// Step 1b: wait for the holder.

// waitRelease waits for the holder of the sync's owner key to let go and
// claims it then. It returns the claim result (nil when something else
// needs a look: a poke, the end of the epoch), whether a release was seen,
// and the error of a claim whose outcome is unknown. The wait is on the
// worker's shared owners/ watch (releaseWatch), which starts at the current
// revision: the claim is tried again once it is in place, so no release can
// slip between the two.
func (w *worker) waitRelease(a *actor, p *preparation) (*claimResult, bool, error) {
	wt := w.releases.add(a.id)
	defer w.releases.remove(a.id, wt)
	var prepared <-chan error
	if p != nil {
		prepared = p.done
	}
	for {
		select {
		case err := <-prepared:
			prepared = nil
			p.finish(err)
			continue
		case <-wt.wake:
			released := w.releases.sawDelete(wt)
			rs, err := w.claim([]string{a.id})
			if err != nil {
				return nil, released, err
			}
			if r := rs[a.id]; !r.taken {
				return r, released, nil
			}
		case <-a.kick:
			w.mu.Lock()
			want := a.want
			w.mu.Unlock()
			if !want {
				return nil, false, nil
			}
		case <-w.ctx.Done():
			return nil, false, nil
		}
	}
}

// markGone records that the sync cannot be run here until its spec
// changes, as the claim r found it; unless the syncs watch has shown a
// valid spec newer than r's read meanwhile (r is stale: the actor claims
// again and reads the spec anew).
func (w *worker) markGone(a *actor, r *claimResult) {
	w.mu.Lock()
	if a.spec != nil && a.spec.Revision > r.specRev {
		w.mu.Unlock()
		return
	}
	if w.target[a.id] {
		w.gone[a.id] = true
	}
	w.updateWantLocked(a)
	w.mu.Unlock()
	w.c.log.Warn("sync not runnable", "sync", a.id, "error", r.syncErr)
}

// Step 2: assign.

// own runs the claimed sync through the handler until ownership ends, and
// gives the owner key back. It returns why ownership ended and whether the
// key is gone: it is not when the lease is at risk or gone, or the client
// closed (the lease then takes the key with it).
func (w *worker) own(a *actor, r *claimResult) (assignment.RevokeReason, bool) {
	c, err := assignment.NewClaim(assignment.ClaimConfig{
		KV:            w.c.cli,
		OwnerKey:      w.c.keys.Owner(a.id),
		CheckpointKey: w.c.keys.Checkpoint(a.id),
		Member:        w.c.o.memberID,
		Token:         r.token,
		Deadline:      w.sess.Deadline,
		Sync:          r.sync,
	})
	if err != nil { // cannot happen: every field is set above
		panic(err)
	}
	if testHooks.beforeAssign != nil {
		testHooks.beforeAssign(a.id, w.sess.AtRisk())
	}
	if !w.mayAssign() {
		return w.lostReason(), w.giveBack(a.id, r)
	}
	w.mu.Lock()
	if a.spec == nil || a.spec.Revision < r.sync.Revision {
		a.spec = &r.sync
	}
	a.failure = nil
	w.mu.Unlock()
	log := w.c.log.With("sync", a.id, "token", c.Token())
	w.c.addOwned(c)
	why := w.hold(a, c, log)
	// Forgotten before the key is deleted, so that Owned never lists a
	// claim whose owner key is gone: it lists a claim from the owner key's
	// write until OnRevoke has returned.
	w.c.removeOwned(c)
	// Given back in every case: after a lease-lost revoke the attempt
	// ends at once (the lease is abandoned and takes the key with it).
	released := w.giveBack(a.id, r)
	log.Info("released", "reason", why.String())
	return why, released
}

// mayAssign reports whether OnAssign may start: not once the lease is at
// risk (deadline - RevokeTimeout), when the member could no longer be sure
// to stop the work by its deadline.
func (w *worker) mayAssign() bool {
	return !w.sess.isAtRisk() && time.Now().Before(w.sess.atRiskAt())
}

// hold calls OnAssign, then waits for a reason to end ownership, passing
// spec changes on the way (ownedLoop), and calls OnRevoke. Without an
// Updater, a spec change is OnRevoke(SpecChanged) and OnAssign again, with
// the same *Claim carrying the new spec.
func (w *worker) hold(a *actor, c *assignment.Claim, log *slog.Logger) assignment.RevokeReason {
	for {
		octx, cancel := context.WithCancel(context.WithValue(w.sess.atRisk, failKey{}, func(err error) {
			w.mu.Lock()
			a.failure = err
			w.mu.Unlock()
			a.poke()
		}))
		log.Info("assigned", "revision", c.Sync().Revision)
		if err := w.c.callAssign(octx, c); err != nil {
			cancel()
			log.Warn("OnAssign failed", "error", err)
			w.revoke(c, assignment.Failed)
			return assignment.Failed
		}
		why, respec := w.ownedLoop(a, c, octx, log)
		cancel()
		w.revoke(c, why)
		if why != assignment.SpecChanged {
			return why
		}
		setClaimSync(c, respec)
		if testHooks.beforeAssign != nil {
			testHooks.beforeAssign(a.id, w.sess.AtRisk())
		}
		if !w.mayAssign() {
			return w.lostReason()
		}
	}
}

// setClaimSync gives claim c the sync s, as the handler is to see it next.
func setClaimSync(c *assignment.Claim, s assignment.Sync) { claimsync.Set(c, s) }

// Step 3: update.

// ownedLoop waits while the sync is owned; it returns why ownership ends
// and, for SpecChanged, the new spec. Only a change of the spec itself
// reaches the handler: a Put of the same spec, or of a new weight or new
// labels only (the leader's business: they may move the sync, which then
// comes as a revoke), updates the claim's Sync silently.
func (w *worker) ownedLoop(a *actor, c *assignment.Claim, octx context.Context, log *slog.Logger) (assignment.RevokeReason, assignment.Sync) {
	var handoff <-chan time.Time // a prepared handoff's timeout
	for {
		select {
		case <-w.sess.AtRisk():
			return w.lostReason(), assignment.Sync{}
		case <-w.ctx.Done():
			return w.lostReason(), assignment.Sync{}
		case <-a.kick:
		case <-handoff:
		}
		// select picks at random among ready cases: a kick that came with
		// the lease at risk must not win over it.
		if w.sess.isAtRisk() || w.ctx.Err() != nil {
			return w.lostReason(), assignment.Sync{}
		}
		w.mu.Lock()
		want, reason, failure, spec := a.want, a.reason, a.failure, a.spec
		a.failure = nil
		w.mu.Unlock()
		switch {
		case !want:
			if d := w.handoffWait(a, reason); d > 0 {
				handoff = time.After(d)
				continue
			}
			return reason, assignment.Sync{}
		case failure != nil:
			log.Warn("sync failed", "error", failure)
			w.c.m.callbackError("run")
			return assignment.Failed, assignment.Sync{}
		case spec != nil && spec.Revision > c.Sync().Revision:
			if bytes.Equal(spec.Spec, c.Sync().Spec) {
				setClaimSync(c, *spec)
				continue
			}
			if w.c.upd == nil {
				return assignment.SpecChanged, *spec
			}
			setClaimSync(c, *spec)
			log.Info("spec updated", "revision", spec.Revision)
			w.c.callUpdate(octx, c)
		}
	}
}

// Step 3b: prepared handoff.

// handoffWait reports how much longer the owner of a sync leaving for
// reason waits before it lets go: while a prepared handoff is announced
// (see Preparer) and the new member has not said it is ready, up to the
// prepare timeout after the move was seen; 0 to let go now.
func (w *worker) handoffWait(a *actor, reason assignment.RevokeReason) time.Duration {
	if reason != assignment.Rebalanced && reason != assignment.Draining {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if a.handoffTo == "" || w.leaving {
		return 0 // none announced, or the member is leaving: Leave's drain has waited
	}
	// The member announced is ready; or a member of a later plan is (the
	// plan moved the sync on while it was prepared, which this member's
	// target, no longer holding the sync, does not announce again). A
	// signal left from an earlier move has an earlier generation.
	if r, ok := w.readies[a.id]; ok && (r.Member == a.handoffTo && r.Generation >= a.handoffGen || r.Generation > a.handoffGen) {
		w.c.m.prepared("awaited")
		a.handoffTo = ""
		return 0
	}
	left := w.c.o.prepare - time.Since(a.leftAt)
	if left <= 0 {
		w.c.m.prepared("timeout")
		w.c.log.Info("prepare timeout passed; letting go", "sync", a.id, "to", a.handoffTo)
		a.handoffTo = ""
		return 0
	}
	return left
}

// preparation is one OnPrepare call in progress (see startPrepare).
type preparation struct {
	w        *worker
	id       string
	holder   string
	gen      int64
	done     chan error // gets OnPrepare's result; nil once taken
	ctx      context.Context
	cancel   context.CancelFunc
	returned chan struct{} // closed once OnPrepare has returned
	stopAt   func() bool
	over     bool // the result was taken
}

// startPrepare starts OnPrepare for a sync that res found held by another
// member, once each time the sync became wanted here (since); it returns
// nil when there is nothing to prepare. The caller waits for the holder
// meanwhile, takes the result from done (then finish), and calls stop
// once it stops waiting: a prepare still running then is abandoned (the
// sync is no longer wanted here, the holder let go first, the epoch ends)
// and its ctx cancelled. The ctx also ends at the prepare timeout and when
// the lease is at risk. An OnPrepare that ignores its ctx runs on, and no
// other starts for the sync until it returns.
func (w *worker) startPrepare(r *actorRun, res *claimResult, since time.Time) *preparation {
	if w.c.prep == nil || res.holder == "" || res.holder == w.c.o.memberID || res.syncErr != nil || r.preparedFor.Equal(since) {
		return nil
	}
	r.preparedFor = since
	if r.preparing != nil {
		select {
		case <-r.preparing:
		default:
			w.c.log.Warn("an earlier OnPrepare has not returned; not preparing again", "sync", r.a.id)
			return nil
		}
	}
	w.mu.Lock()
	gen := w.targetGen
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.ctx, w.c.o.prepare)
	p := &preparation{w: w, id: r.a.id, holder: res.holder, gen: gen, done: make(chan error, 1), ctx: ctx, cancel: cancel}
	p.stopAt = context.AfterFunc(w.sess.atRisk, cancel)
	returned := make(chan struct{})
	p.returned, r.preparing = returned, returned
	w.prepares.Add(1)
	go func() {
		defer w.prepares.Done()
		defer close(returned)
		p.done <- w.c.callPrepare(ctx, res.sync)
	}()
	return p
}

// finish takes OnPrepare's result and tells the holder this member is
// ready (after an error too: the move then goes on cold, rather than wait
// for the timeout). A prepare whose ctx ended first (the timeout, the
// lease at risk) is abandoned and tells nothing.
func (p *preparation) finish(err error) {
	p.over, p.done = true, nil
	w := p.w
	switch ctxErr := context.Cause(p.ctx); {
	case ctxErr != nil:
		w.c.m.prepared("abandoned")
		w.c.log.Info("prepare abandoned", "sync", p.id, "cause", ctxErr)
		return
	case err != nil:
		w.c.m.callbackError("prepare")
		w.c.m.prepared("failed")
		w.c.log.Warn("OnPrepare failed; the move goes on cold", "sync", p.id, "error", err)
	default:
		w.c.m.prepared("ready")
	}
	w.tellReady(p.id, p.holder, p.gen)
}

// stop ends the preparation; one still running is abandoned, and waited
// for up to the revoke timeout, so that a claim that follows does not call
// OnAssign while an OnPrepare that honours its ctx is still returning.
func (p *preparation) stop() {
	if p == nil {
		return
	}
	p.cancel()
	p.stopAt()
	if p.over {
		return
	}
	p.w.c.m.prepared("abandoned")
	select {
	case <-p.returned:
	case <-time.After(p.w.c.o.revokeTimeout):
		p.w.c.log.Warn("OnPrepare has not returned though its ctx was cancelled; going on", "sync", p.id)
	}
}

// tellReady puts the handoff signal into holder's inbox, on this
// session's lease: the holder lets go of the sync once it sees it (or at
// its prepare timeout, should this put fail or its answer be lost). The
// signals of syncs prepared at once share Txns with the claims.
func (w *worker) tellReady(id, holder string, gen int64) {
	b, _ := json.Marshal(handoffReady{Member: w.c.o.memberID, Generation: gen})
	key := w.c.keys.Handoff(holder, id)
	res := w.claimTxns.do([]batchReq{{key: key, op: clientv3.OpTxn(nil,
		[]clientv3.Op{clientv3.OpPut(key, string(b), clientv3.WithLease(w.sess.id))}, nil)}})
	if err := res[0].err; err != nil {
		w.c.m.etcdError("handoff-ready")
		w.c.log.Warn("could not tell the owner this member is ready; it lets go at its prepare timeout", "sync", id, "owner", holder, "error", err)
	}
}

// Step 4: revoke.

// revoke calls OnRevoke with a budget that depends on why. A planned
// revoke (why.Planned(): the claim is still safely held, so nobody else can
// start) may take as long as it needs, but its ctx ends if the lease comes
// at risk; an overrun of RevokeTimeout is logged and counted. A revoke
// forced by the lease (LeaseLost, Shutdown) has a ctx that ends at the
// claim's deadline, after which the sync counts as given up.
func (w *worker) revoke(cl *assignment.Claim, why assignment.RevokeReason) {
	planned := why.Planned()
	// A planned revoke's ctx is the session's own, not one that ends when
	// OnRevoke returns: work OnRevoke hands it to may outlive the call.
	ctx := w.sess.atRisk
	if !planned {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(context.Background(), cl.Deadline())
		defer cancel()
	}
	start := time.Now()
	w.c.callRevoke(ctx, cl, why)
	took := time.Since(start)
	// Past the deadline with the lease at risk: another member may be
	// running the sync.
	late := time.Now().After(cl.Deadline()) && (!planned || w.sess.isAtRisk())
	overrun := late
	if planned {
		overrun = took > w.c.o.revokeTimeout
	}
	log := w.c.log.With("sync", cl.ID(), "token", cl.Token(), "reason", why.String())
	switch {
	case late:
		log.Error("OnRevoke returned after the ownership deadline; only fencing protects downstream writes now", "took", took)
	case planned && overrun:
		log.Warn("OnRevoke overran the revoke timeout", "took", took)
	}
	if !planned {
		log.Warn("revoked")
	}
	w.c.m.revoked(why, overrun)
}

// lostReason is LeaseLost, or Shutdown when the coordinator is stopping
// for good (its client closed).
func (w *worker) lostReason() assignment.RevokeReason {
	if w.c.clientClosed() {
		return assignment.Shutdown
	}
	return assignment.LeaseLost
}

// Step 5: release.

// giveBack deletes the owner key an actor holds, or may hold (a claim
// whose outcome it never learned), and reports whether it is gone. It
// retries until the delete goes through; it gives up only when the
// session is at risk or the client closed, since then the lease is
// abandoned and takes the key with it. A key held for sure is deleted only
// with its token; a key that may be held, only while it is on this
// session's lease, which no other actor of this sync can hold meanwhile
// (an actor leaves the worker's map only after this).
func (w *worker) giveBack(id string, r *claimResult) bool {
	retry := wait.Backoff{Min: retryMin, Max: retryMax}
	for {
		err := w.deleteOwner(id, r)
		if err == nil {
			if r.unknown {
				w.suspect() // etcd may still apply the claim after this delete
			}
			return true
		}
		if w.sess.isAtRisk() || w.c.clientClosed() {
			return false
		}
		w.c.m.etcdError("release")
		w.c.log.Warn("release failed, retrying", "sync", id, "token", r.token, "error", err)
		if !retry.Wait(w.sess.atRisk) {
			return false
		}
	}
}

// deleteOwner deletes owners/<id> if it is still the key r claimed (its
// token), or, for a claim whose outcome is unknown, if it is on this
// session's lease. The releases of concurrent revokes share Txns (see
// txnBatcher).
func (w *worker) deleteOwner(id string, r *claimResult) error {
	key := w.c.keys.Owner(id)
	guard := clientv3.Compare(clientv3.CreateRevision(key), "=", r.token)
	if r.unknown {
		guard = clientv3.Compare(clientv3.LeaseValue(key), "=", w.sess.id)
	}
	// The handoff signal for this sync in this member's inbox, if any,
	// goes with the key: it was for this release.
	inbox := w.c.keys.Handoff(w.c.o.memberID, id)
	res := w.releaseTxns.do([]batchReq{{key: key, op: clientv3.OpTxn(
		[]clientv3.Cmp{guard}, []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(inbox)}, nil)}})
	return res[0].err
}
