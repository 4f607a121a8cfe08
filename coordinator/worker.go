package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/internal/wait"
)

const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
	// failBackoffMin and failBackoffMax bound the wait before a sync whose
	// OnAssign or run failed is claimed again.
	failBackoffMin = 100 * time.Millisecond
	failBackoffMax = 30 * time.Second
)

// worker is the member side of one session: it follows targets/<self> and
// the specs of the syncs it holds, and keeps one actor per sync that it
// should own or still holds an owner key of.
//
// Locks: there is no lock order, because every lock of the package is a
// leaf: worker.mu, Coordinator.mu, Coordinator.cbMu, session.mu,
// releaseWatch.mu, txnBatcher.mu and runner.mu. No code takes one of them
// while it holds another, or calls anything that may (a callback, a
// Balancer, an etcd request, a blocking channel operation) while it holds
// one. Each declaration says so; keep it true.
type worker struct {
	c    *Coordinator
	sess *session
	ctx  context.Context // ends with the session's epoch

	// mu guards the fields below it and every actor's. A leaf (see above).
	mu     sync.Mutex
	target map[string]bool // sync IDs in targets/<self>
	// gone holds the targeted syncs that cannot run here until their spec
	// changes: deleted, or unreadable as last seen. It never holds a sync
	// outside the target (applyTarget prunes it), and a reload re-reads
	// the spec of every sync in it, so a fix or a re-add missed while a
	// watch was broken is never missed for good.
	gone    map[string]bool
	actors  map[string]*actor
	leaving bool
	loaded  bool // the target has been read at least once
	// targetGen is the generation of the target applied last.
	targetGen int64
	// readies is this member's handoff inbox (handoffs/<self>/), by sync:
	// the members that said they have prepared a sync leaving here.
	readies map[string]handoffReady

	actorsWG sync.WaitGroup
	// prepares counts OnPrepare calls still running, abandoned ones
	// included (see worker.prepare).
	prepares sync.WaitGroup

	// claimTxns and releaseTxns share Txns among the actors (group
	// commit). Releases run on the session's context: a release must go
	// out even as the epoch ends, until the lease is at risk.
	claimTxns, releaseTxns *txnBatcher
	// releases is the owners/ watch of the actors waiting for a holder.
	releases *releaseWatch
	// memberKick asks the worker to bring members/<self> up to date (a
	// Drain was called).
	memberKick chan struct{}
	// rechecks are the instants at which the worker looks for keys on its
	// lease once more (see reconcile), oldest first (worker.mu): each a TTL
	// after an actor gave back a claim whose outcome it never learned, since
	// etcd may still apply that claim after the delete that gave it back.
	// They outlive a reload. suspectKick wakes the worker for a new one.
	rechecks    []time.Time
	suspectKick chan struct{}
	// drainShown: the member key says draining, as this worker saw or
	// wrote it.
	drainShown atomic.Bool
	// memberPending: a member-key write failed and is to be tried again.
	memberPending atomic.Bool
	// targetKeys are the keys of targets/<self> (head and parts) as last
	// read and watched, put together into whole targets; only the
	// worker's goroutine uses them.
	targetKeys memberTarget
}

func newWorker(ctx context.Context, c *Coordinator, s *session) *worker {
	w := &worker{
		c: c, sess: s, ctx: ctx, target: map[string]bool{}, gone: map[string]bool{}, actors: map[string]*actor{},
		readies:     map[string]handoffReady{},
		claimTxns:   &txnBatcher{cli: c.cli, ctx: ctx, timeout: s.ttl / 2},
		releaseTxns: &txnBatcher{cli: c.cli, ctx: s.atRisk, timeout: s.ttl / 2},
		memberKick:  make(chan struct{}, 1),
		suspectKick: make(chan struct{}, 1),
	}
	w.releases = &releaseWatch{w: w, waiters: map[string]*releaseWaiter{}}
	return w
}

func (a *actor) poke() { poke(a.kick) }

// poke sends on a channel of capacity 1 without blocking: a wake-up that
// is already pending covers this one.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run follows the target and spec watches until the epoch ends, then waits
// for every actor. A load that fails, or watches that break again soon
// after a reload, are retried with backoff rather than in a tight loop.
func (w *worker) run() {
	defer w.waitPrepares()
	defer w.actorsWG.Wait()
	var rev, specRev int64
	followed := false
	load := func() error {
		var err error
		if followed {
			rev, specRev, err = w.reload()
		} else {
			rev, specRev, err = w.load()
		}
		switch {
		case errors.Is(err, errMemberIDTaken):
			w.memberTrouble(err)
			return fmt.Errorf("%w: %w", wait.ErrStop, err)
		case err != nil:
			w.c.log.Warn("loading target failed, retrying", "error", err)
		}
		return err
	}
	follow := func() bool {
		w.follow(rev, specRev)
		followed = true
		return false // only a follow that held a while (retryMax) reloads at once
	}
	_ = wait.LoadAndFollow(w.ctx, &wait.Backoff{Min: retryMin, Max: retryMax}, load, follow)
}

// waitPrepares waits for the OnPrepare calls still running, whose ctx has
// ended with the epoch, for up to the revoke timeout: one that ignores its
// ctx is left running, and logged.
func (w *worker) waitPrepares() {
	done := make(chan struct{})
	go func() { w.prepares.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.c.o.revokeTimeout):
		w.c.log.Error("OnPrepare ignores its cancelled ctx; left running")
		w.c.m.callbackError("prepare")
	}
}

// load reads targets/<self> and members/<self> and applies them. It returns
// the revision they were read at, twice: from the next one on, the target
// and the specs are followed.
func (w *worker) load() (rev, specRev int64, err error) {
	return w.loadTarget(0)
}

// reload is load after a watch broke: it first gives every owner key on
// the lease that no actor holds to an actor (reconcile), and re-reads the
// spec of every sync the member has an opinion on (those with an actor,
// and those marked gone), since the gap may have hidden changes. specRev
// is the revision from which spec changes may not have been seen: the
// first spec read's (later reads may be at later revisions, so the syncs
// watch starts there and replays what they saw).
func (w *worker) reload() (rev, specRev int64, err error) {
	if err := w.reconcile(); err != nil {
		return 0, 0, err
	}
	if specRev, err = w.rereadSpecs(); err != nil {
		return 0, 0, err
	}
	return w.loadTarget(specRev)
}

// rereadSpecs reads the spec of every sync with an actor or marked gone,
// and applies them; it returns the revision of the first read (0 if none).
func (w *worker) rereadSpecs() (specRev int64, err error) {
	w.mu.Lock()
	ids := make([]string, 0, len(w.actors)+len(w.gone))
	for id := range w.actors {
		ids = append(ids, id)
	}
	for id := range w.gone {
		if w.actors[id] == nil {
			ids = append(ids, id)
		}
	}
	w.mu.Unlock()
	// Specs in Txns of at most 127 reads, before the target, so the
	// revision the target is read at covers everything read.
	for start := 0; start < len(ids); start += 127 {
		batch := ids[start:min(start+127, len(ids))]
		ops := make([]clientv3.Op, len(batch))
		for i, id := range batch {
			ops[i] = clientv3.OpGet(w.c.keys.Sync(id))
		}
		resp, err := w.txn(ops...)
		if err != nil {
			w.c.m.etcdError("load-specs")
			return 0, err
		}
		if specRev == 0 {
			specRev = resp.Header.Revision
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 1 {
				w.applySpec(kvs[0], mvccpb.PUT)
			} else {
				w.applySpec(&mvccpb.KeyValue{Key: []byte(w.c.keys.Sync(batch[i]))}, mvccpb.DELETE)
			}
		}
	}
	return specRev, nil
}

// loadTarget reads targets/<self> and members/<self> and applies them. It
// returns the revision they were read at, and specRev, or that revision if
// specRev is 0.
func (w *worker) loadTarget(specRev int64) (rev, _ int64, err error) {
	self := w.c.o.memberID
	resp, err := w.txn(
		clientv3.OpGet(w.c.keys.Target(self)),
		clientv3.OpGet(w.c.keys.TargetParts(self), clientv3.WithPrefix()),
		clientv3.OpGet(w.c.keys.Member(self)),
		clientv3.OpGet(w.c.keys.Handoffs(self), clientv3.WithPrefix()),
	)
	if err != nil {
		w.c.m.etcdError("load-target")
		return 0, 0, err
	}
	var member *mvccpb.KeyValue
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 1 {
		member = kvs[0]
	}
	if err := w.keepMember(member); errors.Is(err, errMemberIDTaken) {
		return 0, 0, err
	} else if err != nil {
		w.memberTrouble(err) // follow tries again; the target applies meanwhile
	}
	// follow goes on from these keys: it puts the events on single keys
	// together into whole targets.
	w.mu.Lock()
	clear(w.readies)
	w.mu.Unlock()
	w.handoffEvents(kvEvents(resp.Responses[3].GetResponseRange().Kvs))
	w.targetKeys = memberTarget{}
	w.targetKeys.read(w.c.keys, self, resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs)
	if ids, ok := w.targetKeys.next(w.c.log); ok {
		w.applyTarget(ids)
	}
	if specRev == 0 {
		specRev = resp.Header.Revision
	}
	return resp.Header.Revision, specRev, nil
}

// txn runs a Txn of reads for the worker, bounded like a claim: one stuck on
// an unresponsive etcd member fails after TTL/2, and the worker tries again.
func (w *worker) txn(ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.sess.ttl/2)
	defer cancel()
	return w.c.cli.Txn(ctx).Then(ops...).Commit()
}

// follow watches the target and the member key from rev+1 and the specs
// from specRev+1 until a watch breaks (compaction, lost etcd leader, closed
// channel), the member key cannot be kept, or the epoch ends. A spec event
// replayed from before rev is newer than the read it follows, so applying
// it is right.
func (w *worker) follow(rev, specRev int64) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	self := w.c.o.memberID
	tch := w.c.cli.Watch(ctx, w.c.keys.Target(self), clientv3.WithRev(rev+1))
	pch := w.c.cli.Watch(ctx, w.c.keys.TargetParts(self), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	mch := w.c.cli.Watch(ctx, w.c.keys.Member(self), clientv3.WithRev(rev+1))
	sch := w.c.cli.Watch(ctx, w.c.keys.Syncs(), clientv3.WithPrefix(), clientv3.WithRev(specRev+1))
	hch := w.c.cli.Watch(ctx, w.c.keys.Handoffs(self), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	recheck := time.NewTimer(time.Hour)
	defer recheck.Stop()
	w.armRecheck(recheck)
	member := newMemberRetry(w)
	defer member.stop()
	for {
		ok := true
		select {
		case <-w.ctx.Done():
			return
		case <-w.suspectKick:
			w.armRecheck(recheck)
		case <-recheck.C:
			if err := w.reconcile(); err != nil {
				w.c.log.Info("looking for owner keys on the lease failed, reloading", "error", err)
				return
			}
			w.armRecheck(recheck)
		case <-member.timer.C:
			ok = member.keep(nil)
		case <-w.memberKick:
			ok = member.keep(nil)
		case wr, open := <-tch:
			ok = w.watched("target", wr, open) && w.targetEvents(wr.Events)
		case wr, open := <-pch:
			ok = w.watched("target parts", wr, open) && w.targetEvents(wr.Events)
		case wr, open := <-mch:
			ok = w.watched("member", wr, open) && member.events(wr.Events)
		case wr, open := <-sch:
			ok = w.watched("syncs", wr, open) && w.specEvents(wr.Events)
		case wr, open := <-hch:
			ok = w.watched("handoffs", wr, open) && w.handoffEvents(wr.Events)
		}
		if !ok {
			return
		}
	}
}

// targetEvents applies events on targets/<self> and its parts: a new
// complete target, once it is one. It always returns true.
func (w *worker) targetEvents(evs []*clientv3.Event) bool {
	w.targetKeys.events(w.c.keys, evs)
	if ids, ok := w.targetKeys.next(w.c.log); ok {
		w.applyTarget(ids)
	}
	return true
}

// handoffEvents applies events on this member's handoff inbox: a member
// a sync leaves for says it is ready, and the sync's actor looks again. It
// always returns true.
func (w *worker) handoffEvents(evs []*clientv3.Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range evs {
		id, ok := keys.ID(w.c.keys.Handoffs(w.c.o.memberID), string(ev.Kv.Key))
		if !ok {
			continue
		}
		var r handoffReady
		if ev.Type == mvccpb.DELETE || json.Unmarshal(ev.Kv.Value, &r) != nil {
			delete(w.readies, id)
			continue
		}
		w.readies[id] = r
		if a := w.actors[id]; a != nil {
			a.poke()
		}
	}
	return true
}

// kvEvents makes puts of a snapshot's keys.
func kvEvents(kvs []*mvccpb.KeyValue) []*clientv3.Event {
	evs := make([]*clientv3.Event, len(kvs))
	for i, kv := range kvs {
		evs[i] = &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
	}
	return evs
}

// specEvents applies events on syncs/. It always returns true.
func (w *worker) specEvents(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		w.applySpec(ev.Kv, ev.Type)
	}
	return true
}

// memberRetry keeps members/<self> as the follow loop sees it, and tries a
// write that failed again after a backoff, while the target and specs are
// followed meanwhile. Only the follow loop's goroutine uses it.
type memberRetry struct {
	w     *worker
	timer *time.Timer
	delay wait.Backoff
}

func newMemberRetry(w *worker) *memberRetry {
	m := &memberRetry{w: w, timer: time.NewTimer(time.Hour), delay: wait.Backoff{Min: retryMin, Max: retryMax}}
	m.timer.Stop()
	if w.memberPending.Load() {
		m.timer.Reset(0)
	}
	return m
}

func (m *memberRetry) stop() { m.timer.Stop() }

// keep brings the member key in line with this member (see keepMember),
// given the key as last seen (nil: deleted, or to be read); false when
// another session holds it, which ends the session.
func (m *memberRetry) keep(kv *mvccpb.KeyValue) bool {
	err := m.w.keepMember(kv)
	switch {
	case err == nil:
		m.delay.Reset()
	case errors.Is(err, errMemberIDTaken):
		m.w.memberTrouble(err)
		return false
	default:
		m.w.memberTrouble(err)
		m.timer.Reset(m.delay.Next())
	}
	return true
}

// events keeps the member key through watch events on it.
func (m *memberRetry) events(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		kv := ev.Kv
		if ev.Type == mvccpb.DELETE {
			kv = nil
		}
		if !m.keep(kv) {
			return false
		}
	}
	return true
}

// watched reports whether a watch answer can be applied; false (logged)
// when the watch broke, and follow must end for a reload.
func (w *worker) watched(what string, wr clientv3.WatchResponse, open bool) bool {
	if open && wr.Err() == nil {
		return true
	}
	if w.ctx.Err() == nil {
		err := errors.New("channel closed")
		if open {
			err = wr.Err()
		}
		w.c.log.Info("watch interrupted, reloading", "watch", what, "error", err)
	}
	return false
}

// armRecheck drops the rechecks that are due (the reconcile that just ran,
// or is about to, covers them) and sets t for the next one.
func (w *worker) armRecheck(t *time.Timer) {
	w.mu.Lock()
	now := time.Now()
	due := 0
	for due < len(w.rechecks) && !w.rechecks[due].After(now) {
		due++
	}
	w.rechecks = w.rechecks[due:]
	next := time.Hour
	if len(w.rechecks) > 0 {
		next = time.Until(w.rechecks[0])
	}
	w.mu.Unlock()
	t.Reset(next)
}

// suspect schedules a look for keys on the lease a TTL from now.
func (w *worker) suspect() {
	w.mu.Lock()
	w.rechecks = append(w.rechecks, time.Now().Add(w.sess.ttl))
	w.mu.Unlock()
	poke(w.suspectKick)
}

// applySpec records a spec event: for a sync with an actor it updates the
// actor; for a targeted sync without one it keeps or clears the gone mark,
// and starts an actor once the spec can be run. Other syncs' events are
// dropped at once, so memory follows what is owned.
func (w *worker) applySpec(kv *mvccpb.KeyValue, ev mvccpb.Event_EventType) {
	id, ok := keys.ID(w.c.keys.Syncs(), string(kv.Key))
	if !ok {
		return
	}
	var sy assignment.Sync
	var err error
	if ev == mvccpb.DELETE {
		err = fmt.Errorf("coordinator: sync %q was deleted", id)
	} else {
		sy, err = decodeSync(id, kv.Value, kv.ModRevision)
	}
	w.mu.Lock()
	a := w.actors[id]
	if (a == nil && !w.target[id]) || (a != nil && a.spec != nil && kv.ModRevision < a.spec.Revision) {
		// Not ours; or older than the spec the actor has (its claim read
		// the spec while the watch was behind): nothing new.
		w.mu.Unlock()
		return
	}
	if err != nil {
		if w.target[id] {
			w.gone[id] = true
		}
	} else {
		delete(w.gone, id)
		if a != nil && (a.spec == nil || sy.Revision > a.spec.Revision) {
			a.spec = &sy
			a.poke()
		}
	}
	switch {
	case a != nil:
		w.updateWantLocked(a)
	case err == nil && !w.leaving && w.ctx.Err() == nil:
		// A targeted sync whose spec was unreadable (or that was
		// re-created) can run again.
		w.spawnLocked(id, nil)
	}
	w.mu.Unlock()
	if a != nil && err != nil && ev != mvccpb.DELETE {
		w.c.log.Error("owned sync has an invalid spec; revoking it", "sync", id, "error", err)
	}
}

// applyTarget makes ids the member's target, with the prepared handoffs
// its head announces.
func (w *worker) applyTarget(ids []string) {
	next := make(map[string]bool, len(ids))
	for _, id := range ids {
		next[id] = true
	}
	gen, handoffs := w.targetKeys.handoffs()
	now := time.Now()
	w.mu.Lock()
	w.loaded = true
	w.target = next
	w.targetGen = gen
	for id, a := range w.actors {
		switch to := handoffs[id]; {
		case next[id]:
			a.handoffTo = "" // it stays: whatever was announced is off
		case to != "" && (to != a.handoffTo || a.leftAt.IsZero()):
			a.handoffTo, a.handoffGen, a.leftAt = to, gen, now
		}
	}
	for id := range w.gone {
		if !next[id] {
			delete(w.gone, id)
		}
	}
	var added []string
	for id := range next {
		if w.actors[id] == nil && !w.gone[id] {
			added = append(added, id)
		}
	}
	for _, a := range w.actors {
		w.updateWantLocked(a)
	}
	leaving := w.leaving
	w.mu.Unlock()
	w.c.notify()
	if len(added) == 0 || leaving {
		return
	}
	slices.Sort(added)
	// Claim the new syncs in batches before their actors start, so a cold
	// start costs a few Txns rather than one per sync.
	pre, err := w.claim(added)
	if err != nil {
		w.c.log.Warn("batched claim failed; each sync retries on its own", "syncs", len(added), "error", err)
		// Any of them may have gone through: each actor finds out (it
		// adopts the key, or gives it back).
		pre = make(map[string]*claimResult, len(added))
		for _, id := range added {
			pre[id] = &claimResult{unknown: true}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range added {
		if w.actors[id] == nil {
			w.spawnLocked(id, pre[id])
		}
	}
}

// spawnLocked starts the actor of sync id; pre is the result of a claim
// already made for it, if any.
func (w *worker) spawnLocked(id string, pre *claimResult) {
	a := &actor{id: id, kick: make(chan struct{}, 1), since: time.Now()}
	w.actors[id] = a
	w.updateWantLocked(a)
	w.actorsWG.Add(1)
	go w.runActor(a, pre)
}

// updateWantLocked recomputes whether a's sync should be owned here, and
// why not.
func (w *worker) updateWantLocked(a *actor) {
	want := w.target[a.id] && !w.gone[a.id] && !w.leaving
	if want == a.want {
		return
	}
	a.want = want
	if want {
		a.since = time.Now()
	} else {
		a.reason = w.reasonLocked(a.id)
	}
	a.poke()
}

func (w *worker) reasonLocked(id string) assignment.RevokeReason {
	if testHooks.revokeReason != nil {
		testHooks.revokeReason(id)
	}
	switch {
	case w.leaving:
		return assignment.Leaving
	case w.gone[id]:
		return assignment.Removed
	case w.c.draining.Load():
		return assignment.Draining
	}
	return assignment.Rebalanced
}

// leaveAll revokes everything with reason Leaving and stops claiming.
func (w *worker) leaveAll() {
	w.mu.Lock()
	w.leaving = true
	for _, a := range w.actors {
		w.updateWantLocked(a)
	}
	w.mu.Unlock()
}

// idle reports whether the target has been read, is empty, and nothing is
// owned or being revoked.
func (w *worker) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.loaded && len(w.target) == 0 && len(w.actors) == 0
}

func (w *worker) actorCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.actors)
}

// reconcile gives every owner key on this session's lease that no actor
// holds to a new actor, which adopts it if the sync is targeted here and
// gives it back otherwise. Such a key is left by a claim that etcd applied
// although its answer was an error or never came (possibly after the
// actor had given it back), and nothing else would ever free it while the
// member lives: a member the sync moves to would wait for it for good.
func (w *worker) reconcile() error {
	ctx, cancel := context.WithTimeout(w.ctx, w.sess.ttl/2)
	defer cancel()
	resp, err := w.c.cli.TimeToLive(ctx, w.sess.id, clientv3.WithAttachedKeys())
	if err != nil {
		w.c.m.etcdError("lease-keys")
		return fmt.Errorf("coordinator: keys on the lease: %w", err)
	}
	var orphans []string
	w.mu.Lock()
	for _, k := range resp.Keys {
		id, ok := keys.ID(w.c.keys.Owners(), string(k))
		if !ok || w.actors[id] != nil {
			continue
		}
		orphans = append(orphans, id)
		w.spawnLocked(id, &claimResult{unknown: true})
	}
	w.mu.Unlock()
	if len(orphans) > 0 {
		w.c.m.orphans(len(orphans))
		w.c.log.Warn("owner keys on this member's lease with no sync running; adopting or releasing them", "syncs", orphans)
	}
	return nil
}
