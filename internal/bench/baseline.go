package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/baton-go/baton/internal/keys"
)

// baselineSystem is what a team writes by hand without Baton: one
// concurrency.Mutex per sync, and every member tries the locks it sees
// free. Exactly:
//
//   - Each member has one concurrency.Session (lease of the same TTL as
//     Baton's, renewed by clientv3's keep-alive loop) and registers
//     <baseline>/<group>/members/<id> with it ("active" or "draining").
//   - It reads the sync IDs from the same syncs/ keys Baton uses, and
//     watches syncs/, members/ and the lock keys locks/<sync>/<lease>. So it
//     knows, without asking etcd, which syncs are free (no lock key) and how
//     many each member holds (the lease of the oldest key of each sync).
//   - After any change it rescans, with lo = ⌊syncs / active members⌋ and
//     hi = ⌈syncs / active members⌉ (draining members are not active):
//     a member below lo tries free locks up to lo; a member at lo or above
//     tries free locks up to hi only while no active member is below lo;
//     a member above hi releases the excess; and when the members below lo
//     lack more than the free syncs, the most loaded members release one
//     each in turn (by load, then ID, so every member computes the same
//     split) until the shortfall is covered. A draining member releases
//     everything. Releasing is: stop the sync, then Mutex.Unlock. Trying is
//     Mutex.TryLock on free syncs in random order, at most
//     -baseline-inflight at a time per member; a lost race (ErrLocked)
//     costs TryLock's clean-up delete.
//   - Nothing else: no leader, no plan, no fencing beyond the lock key.
//
// It is a fair baseline, not a straw man: it never polls, never tries a
// lock it knows is held, and keeps members within one sync of each other.
type baselineSystem struct {
	env      *etcdEnv
	ttl      time.Duration
	inflight int
}

func (s *baselineSystem) name() string { return "baseline" }

type baselineMember struct {
	mid      string
	cli      *clientv3.Client
	cnt      *counter
	sess     *concurrency.Session
	tr       reporter
	inflight int

	syncsPfx   string // Baton's syncs/ prefix, shared workload
	locksPfx   string
	membersPfx string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}

	scans    atomic.Int64
	scanning atomic.Bool

	mu       sync.Mutex
	syncs    map[string]bool
	free     map[string]bool             // syncs with no lock key
	keysOf   map[string]map[string]int64 // sync -> lock key -> create revision
	holder   map[string]int64            // sync -> lease of its oldest lock key
	load     map[int64]int               // lease -> syncs it holds
	mineSeen map[string]bool             // syncs whose holder is this member's lease
	members  map[string]memberInfo
	held     map[string]*heldLock // mine
	draining bool
	leaving  bool
	changed  chan struct{} // closed and replaced when held changes
}

type memberInfo struct {
	lease    int64
	draining bool
}

type heldLock struct {
	mu    *concurrency.Mutex
	token int64
}

func (s *baselineSystem) join(ctx context.Context, group, id string, tr reporter) (member, error) {
	cnt := newCounter()
	cli, err := s.env.client(cnt)
	if err != nil {
		return nil, err
	}
	m, err := startBaselineMember(ctx, cli, group, id, s.ttl, s.inflight, tr)
	if err != nil {
		cli.Close()
		return nil, err
	}
	m.cnt = cnt
	return m, nil
}

func startBaselineMember(ctx context.Context, cli *clientv3.Client, group, id string, ttl time.Duration, inflight int, tr reporter) (*baselineMember, error) {
	k, err := keys.New(batonPrefix, group)
	if err != nil {
		return nil, err
	}
	root := baselinePrefix + "/" + group + "/"
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(ttl/time.Second)))
	if err != nil {
		return nil, fmt.Errorf("baseline session: %w", err)
	}
	m := &baselineMember{
		mid: id, cli: cli, sess: sess, tr: tr, inflight: max(inflight, 1),
		syncsPfx: k.Syncs(), locksPfx: root + "locks/", membersPfx: root + "members/",
		done: make(chan struct{}), kick: make(chan struct{}, 1),
		syncs: map[string]bool{}, free: map[string]bool{}, keysOf: map[string]map[string]int64{},
		holder: map[string]int64{}, load: map[int64]int{}, mineSeen: map[string]bool{}, members: map[string]memberInfo{},
		held: map[string]*heldLock{}, changed: make(chan struct{}),
	}
	if _, err := cli.Put(ctx, m.membersPfx+id, "active", clientv3.WithLease(sess.Lease())); err != nil {
		sess.Close()
		return nil, fmt.Errorf("baseline register: %w", err)
	}
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(m.syncsPfx, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(m.locksPfx, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(m.membersPfx, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("baseline load: %w", err)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		m.applyLock(kv, false)
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		m.applySync(kv, false)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		m.applyMember(kv, false)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	rev := resp.Header.Revision
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.watch(rev) }()
	go func() { defer wg.Done(); m.scanLoop() }()
	go func() { wg.Wait(); close(m.done) }()
	m.poke()
	return m, nil
}

func (m *baselineMember) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *baselineMember) applySync(kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(m.syncsPfx, string(kv.Key))
	if !ok {
		return
	}
	if deleted {
		delete(m.syncs, id)
		delete(m.free, id)
		return
	}
	m.syncs[id] = true
	if len(m.keysOf[id]) == 0 {
		m.free[id] = true
	}
}

// applyLock keeps the lock keys of a sync, its holder (the lease of the
// oldest key: what Mutex considers the owner) and the loads.
func (m *baselineMember) applyLock(kv *mvccpb.KeyValue, deleted bool) {
	rest, ok := strings.CutPrefix(string(kv.Key), m.locksPfx)
	if !ok {
		return
	}
	id, _, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	ks := m.keysOf[id]
	if deleted {
		delete(ks, string(kv.Key))
	} else {
		if ks == nil {
			ks = map[string]int64{}
			m.keysOf[id] = ks
		}
		ks[string(kv.Key)] = kv.CreateRevision
	}
	if h, ok := m.holder[id]; ok {
		m.load[h]--
		delete(m.holder, id)
		delete(m.mineSeen, id)
	}
	if len(ks) == 0 {
		delete(m.keysOf, id)
		if m.syncs[id] {
			m.free[id] = true
		}
		return
	}
	delete(m.free, id)
	var oldest string
	var rev int64
	for k, r := range ks {
		if oldest == "" || r < rev {
			oldest, rev = k, r
		}
	}
	lease, err := strconv.ParseInt(oldest[strings.LastIndexByte(oldest, '/')+1:], 16, 64)
	if err == nil {
		m.holder[id] = lease
		m.load[lease]++
		if lease == int64(m.sess.Lease()) {
			m.mineSeen[id] = true
		}
	}
}

func (m *baselineMember) applyMember(kv *mvccpb.KeyValue, deleted bool) {
	id := strings.TrimPrefix(string(kv.Key), m.membersPfx)
	if deleted {
		delete(m.members, id)
	} else {
		m.members[id] = memberInfo{lease: kv.Lease, draining: string(kv.Value) == "draining"}
	}
}

// watch follows syncs, locks and members until the client closes.
func (m *baselineMember) watch(rev int64) {
	defer m.cancel()
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev + 1)}
	sch := m.cli.Watch(ctx, m.syncsPfx, opts...)
	lch := m.cli.Watch(ctx, m.locksPfx, opts...)
	mch := m.cli.Watch(ctx, m.membersPfx, opts...)
	for {
		var wr clientv3.WatchResponse
		var ok bool
		var apply func(*mvccpb.KeyValue, bool)
		select {
		case <-m.ctx.Done():
			return
		case wr, ok = <-sch:
			apply = m.applySync
		case wr, ok = <-lch:
			apply = m.applyLock
		case wr, ok = <-mch:
			apply = m.applyMember
		}
		if !ok || wr.Err() != nil {
			// The client closed (a crash), or the watch broke: this simple
			// member stops, as a process would that exits on error.
			if m.cli.Ctx().Err() == nil {
				fmt.Fprintf(os.Stderr, "bench: baseline member %s stops: watch ended (%v)\n", m.mid, wr.Err())
			}
			return
		}
		m.mu.Lock()
		for _, ev := range wr.Events {
			apply(ev.Kv, ev.Type == mvccpb.DELETE)
		}
		m.mu.Unlock()
		m.poke()
	}
}

func (m *baselineMember) scanLoop() {
	defer m.stopAll()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.sess.Done():
			return
		case <-m.kick:
		}
		m.scan()
	}
}

// stopAll stops every held sync when the member dies or loses its lease;
// the locks go with the lease.
func (m *baselineMember) stopAll() {
	m.cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, l := range m.held {
		m.tr.revoke(m.mid, id, l.token)
		delete(m.held, id)
	}
	m.notifyLocked()
}

func (m *baselineMember) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// scan releases what is over the member's share and tries free locks up
// to it (see baselineSystem for the rules). Before each TryLock it looks
// at its view again, so a long scan never takes more than the share of the
// moment, nor tries a lock seen taken meanwhile.
func (m *baselineMember) scan() {
	m.scans.Add(1)
	m.scanning.Store(true)
	defer m.scanning.Store(false)
	m.mu.Lock()
	release, free, orphans := m.planLocked()
	m.mu.Unlock()
	m.pool(release, func(done int) int { return len(release) - done }, m.unlock)
	for _, id := range orphans {
		if m.acquireNeed() > 0 && m.tryLock(id) {
			continue
		}
		m.dropKey(id)
	}
	if len(free) > 0 {
		rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		m.pool(free, func(int) int { return m.acquireNeed() }, m.tryLock)
	}
}

// mineLocked returns the held syncs that still exist, sorted, and the
// held ones that were deleted.
func (m *baselineMember) mineLocked() (mine, deleted []string) {
	for id := range m.held {
		if m.syncs[id] {
			mine = append(mine, id)
		} else {
			deleted = append(deleted, id)
		}
	}
	slices.Sort(mine)
	return mine, deleted
}

// targetLocked returns how many of its n held syncs the member keeps and
// how many it should hold in all (more than keep: try free locks).
func (m *baselineMember) targetLocked(n int) (keep, want int) {
	type load struct {
		id string
		n  int
	}
	var active []load
	me := -1
	for id, info := range m.members {
		if info.draining {
			continue
		}
		c := m.load[info.lease]
		if id == m.mid {
			me = len(active)
			c = n // my own count is exact
		}
		active = append(active, load{id, c})
	}
	if me < 0 || m.draining || m.leaving {
		return 0, 0
	}
	k := len(active)
	lo, hi := len(m.syncs)/k, (len(m.syncs)+k-1)/k
	deficit := 0
	for _, a := range active {
		deficit += max(lo-a.n, 0)
	}
	keep = n
	switch {
	case keep > hi:
		keep = hi
	case deficit > len(m.free):
		// The starving members need more than is free: the most loaded
		// give one each in turn, the same split on every member.
		short := deficit - len(m.free)
		loads := slices.Clone(active)
		for ; short > 0; short-- {
			top := -1
			for i, a := range loads {
				if a.n > lo && (top < 0 || a.n > loads[top].n || (a.n == loads[top].n && a.id < loads[top].id)) {
					top = i
				}
			}
			if top < 0 {
				break
			}
			loads[top].n--
		}
		keep = min(keep, loads[me].n)
	}
	switch {
	case keep < lo:
		return keep, lo
	case deficit == 0 && keep < hi:
		return keep, hi
	}
	return keep, keep
}

// planLocked decides what to release, which free syncs to try, and which
// lock keys of its own lease the member does not run.
func (m *baselineMember) planLocked() (release, free, orphans []string) {
	mine, deleted := m.mineLocked()
	keep, want := m.targetLocked(len(mine))
	release = append(deleted, mine[keep:]...)
	if want > keep {
		for id := range m.free {
			if m.held[id] == nil {
				free = append(free, id)
			}
		}
	}
	// A lock key of this member's lease that it does not run (a TryLock
	// that timed out after its put) would block the sync for good: adopt
	// it (TryLock finds its own key and succeeds) or, past the share, let
	// it go.
	for id := range m.mineSeen {
		if m.held[id] == nil && m.syncs[id] {
			orphans = append(orphans, id)
		}
	}
	return release, free, orphans
}

// acquireNeed is how many more syncs the member should take now.
func (m *baselineMember) acquireNeed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	mine, _ := m.mineLocked()
	keep, want := m.targetLocked(len(mine))
	if keep < len(mine) {
		return 0
	}
	return want - len(mine)
}

// pool runs op on ids, at most m.inflight at a time, while need (given how
// many succeeded so far) says more are wanted than are running.
func (m *baselineMember) pool(ids []string, need func(done int) int, op func(string) bool) {
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	got, running := 0, 0
	var wg sync.WaitGroup
	for _, id := range ids {
		mu.Lock()
		for running >= m.inflight || (running > 0 && need(got)-running <= 0) {
			cond.Wait()
		}
		stop := need(got) <= 0 || m.ctx.Err() != nil
		if !stop {
			running++
		}
		mu.Unlock()
		if stop {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := op(id)
			mu.Lock()
			running--
			if ok {
				got++
			}
			cond.Broadcast()
			mu.Unlock()
		}()
	}
	wg.Wait()
}

func (m *baselineMember) tryLock(id string) bool {
	m.mu.Lock()
	taken := !m.free[id] && !m.mineSeen[id]
	m.mu.Unlock()
	if taken {
		return false // seen taken since the scan began
	}
	mu := concurrency.NewMutex(m.sess, m.locksPfx+id)
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	if err := mu.TryLock(ctx); err != nil {
		if !errors.Is(err, concurrency.ErrLocked) {
			// The put may have landed: do not leave a key behind.
			m.dropKey(id)
		}
		return false
	}
	l := &heldLock{mu: mu, token: mu.Header().Revision}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return false
	}
	m.held[id] = l
	m.tr.assign(m.mid, id, l.token)
	m.notifyLocked()
	return true
}

// dropKey deletes this member's lock key of sync id, if any.
func (m *baselineMember) dropKey(id string) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	_, _ = m.cli.Delete(ctx, fmt.Sprintf("%s%s/%x", m.locksPfx, id, m.sess.Lease()))
}

// unlock stops the sync, then deletes its lock key.
func (m *baselineMember) unlock(id string) bool {
	m.mu.Lock()
	l := m.held[id]
	if l == nil {
		m.mu.Unlock()
		return false
	}
	m.tr.revoke(m.mid, id, l.token)
	delete(m.held, id)
	m.notifyLocked()
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	if err := l.mu.Unlock(ctx); err != nil && !errors.Is(err, context.Canceled) {
		// The lease still holds the key; it goes when the member does.
		return false
	}
	return true
}

func (m *baselineMember) id() string               { return m.mid }
func (m *baselineMember) isLeader() bool           { return false }
func (m *baselineMember) stopped() <-chan struct{} { return m.done }
func (m *baselineMember) crash()                   { m.cli.Close() }
func (m *baselineMember) usage() usage {
	if m.cnt == nil {
		return usage{}
	}
	return m.cnt.snapshot()
}

// waitIdle waits until the member holds no lock.
func (m *baselineMember) waitIdle(ctx context.Context) error {
	for {
		m.mu.Lock()
		n, ch := len(m.held), m.changed
		m.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.done:
			return errors.New("baseline member stopped")
		}
	}
}

func (m *baselineMember) drain(ctx context.Context) error {
	m.mu.Lock()
	m.draining = true
	m.mu.Unlock()
	if _, err := m.cli.Put(ctx, m.membersPfx+m.mid, "draining", clientv3.WithLease(m.sess.Lease())); err != nil {
		return err
	}
	m.poke()
	return m.waitIdle(ctx)
}

func (m *baselineMember) leave(ctx context.Context) error {
	m.mu.Lock()
	m.leaving = true
	m.mu.Unlock()
	m.poke()
	err := m.waitIdle(ctx)
	m.cancel()
	<-m.done
	// Closing the session revokes the lease: member key and any lock
	// left go at once.
	m.sess.Close()
	m.cli.Close()
	return err
}

// debugState describes the member's view, for a scenario that timed out.
func (m *baselineMember) debugState() string {
	m.mu.Lock()
	release, free, orphans := m.planLocked()
	held, members, syncs, nfree := len(m.held), len(m.members), len(m.syncs), len(m.free)
	m.mu.Unlock()
	return fmt.Sprintf("%s: held %d, members %d, syncs %d, free %d, would release %d, try up to %d more from %d free, orphans %d, scans %d, scanning %v",
		m.mid, held, members, syncs, nfree, len(release), m.acquireNeed(), len(free), len(orphans), m.scans.Load(), m.scanning.Load())
}
