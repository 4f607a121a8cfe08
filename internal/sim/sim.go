package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/internal/recorder"
	"github.com/baton-go/baton/internal/simetcd"
	"github.com/baton-go/baton/rebalance"
)

// Config shapes one run.
type Config struct {
	Members int           // member IDs m0, m1, …
	Syncs   int           // syncs at the start
	Steps   int           // schedule steps with faults
	TTL     time.Duration // membership lease TTL
	Settle  time.Duration
	// Misbehave lets callbacks and the Balancer misbehave during the
	// faulty part: slow, failing, panicking, hanging.
	Misbehave bool
	// MaxClockSkew is how slow a member's clock may run against etcd's
	// (0.04: 4 %). Each member gets its own skew, fixed for the run: every
	// other member the maximum, the rest a seeded fraction of it. See
	// simetcd's Conn.SetClockSkew for how it is modelled.
	MaxClockSkew float64
}

// DefaultConfig is the shape of the CI seeds.
func DefaultConfig() Config {
	return Config{Members: 4, Syncs: 12, Steps: 40, TTL: 2 * time.Second, Settle: 100 * time.Millisecond, Misbehave: true, MaxClockSkew: 0.04}
}

// Result is what one run saw.
type Result struct {
	Seed      uint64
	Virtual   time.Duration  // virtual time the run took
	Intervals int            // ownership intervals checked
	Converged time.Duration  // from the last join after the faults to every sync running once
	Log       []string       // the schedule's events, with virtual times
	Problems  []string       // invariant violations; empty for a passing run
	Stats     map[string]int // how often each kind of misbehaviour was injected
	// CoordinatorLog is every member's log, kept for a failing run.
	CoordinatorLog string
}

const group = "sim"

// Run runs one schedule of seed. It must be called inside a synctest
// bubble. progress is bumped at every step, for a real-time watchdog.
func Run(t *testing.T, seed uint64, cfg Config, progress *atomic.Int64) *Result {
	w := newWorld(t, seed, cfg, progress)
	defer w.close()
	w.run()
	return w.res
}

// world is one run: the server, the members and the record.
type world struct {
	t        *testing.T
	cfg      Config
	rng      *rand.Rand
	srv      *simetcd.Server
	admin    *clientv3.Client // the harness's own, fault-free connection
	store    *coordinator.SyncStore
	layout   keys.Layout
	rec      *recorder.Recorder
	members  []*member
	syncs    map[string]syncState
	nextSync int
	due      []timed // actions to run later, in time order
	start    time.Time
	progress *atomic.Int64
	// logMu, leaseMu and hungMu are leaves: none is taken while another
	// is held.
	logMu   sync.Mutex // guards res.Log, res.Problems and res.Stats
	clog    syncBuffer // the coordinators' logs
	res     *Result
	faulty  atomic.Bool // callbacks and Balancers may misbehave
	hungMu  sync.Mutex
	hung    []chan struct{} // Balancer calls hanging on purpose, closed when they return
	closing bool            // no Balancer call may start hanging
	leaseMu sync.Mutex
	expired map[int64]time.Time // leases etcd revoked at expiry, and when
	leaseOf map[ownership]int64 // the lease of each running interval's owner key
	endings []ending            // intervals that ended, with their lease

	// release ends when the world does: hung Balancer calls return.
	release    context.Context
	releaseAll context.CancelFunc
	loseMu     sync.Mutex
	restore    func() // ends a LoseLeader; nil while there is a leader
}

type syncState int

const (
	valid syncState = iota
	invalid
)

type timed struct {
	at   time.Time
	what string
	do   func()
}

// member is one member ID, run by one coordinator at a time.
type member struct {
	w    *world
	id   string
	idx  int
	conn *simetcd.Conn
	cli  *clientv3.Client
	co   *coordinator.Coordinator
	rng  *rand.Rand // for its faults and misbehaviour; guarded by mu
	slow float64    // how slow its clock runs against etcd's
	// revoke is its WithRevokeTimeout: the default (TTL/4) or, for half
	// the members, a short one, which leaves only the deadline's own
	// margin between a member's last instant and etcd's expiry.
	revoke time.Duration
	mu     sync.Mutex
}

func (m *member) up() bool { return m.co != nil }

func (m *member) chance(p float64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rng.Float64() < p
}

func (m *member) dur(max time.Duration) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Duration(m.rng.Int64N(int64(max))) + 1
}

func newWorld(t *testing.T, seed uint64, cfg Config, progress *atomic.Int64) *world {
	w := &world{
		t:        t,
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(seed, 0x5eed)),
		syncs:    map[string]syncState{},
		start:    time.Now(),
		progress: progress,
		res:      &Result{Seed: seed, Stats: map[string]int{}},
		rec:      recorder.New(recorder.WithClock(func() int64 { return time.Now().UnixNano() })),
		expired:  map[int64]time.Time{},
		leaseOf:  map[ownership]int64{},
	}
	srv, err := simetcd.New(simetcd.Config{Dir: t.TempDir(), OnExpire: w.leaseExpired})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	w.release, w.releaseAll = context.WithCancel(context.Background())
	w.admin = srv.Connect().Client()
	w.store = coordinator.NewSyncStore(w.admin, group)
	w.layout, err = keys.New(coordinator.DefaultPrefix, group)
	if err != nil {
		t.Fatal(err)
	}
	// The skews have a stream of their own, so that they leave the rest
	// of a seed's schedule as it was before they existed.
	skews := rand.New(rand.NewPCG(seed, 0xc10c))
	for i := range cfg.Members {
		slow := cfg.MaxClockSkew
		if i%2 == 1 {
			slow *= skews.Float64()
		}
		revoke := cfg.TTL / 4
		if skews.IntN(2) == 0 {
			revoke = time.Millisecond + time.Duration(skews.Int64N(int64(cfg.TTL/10)))
		}
		w.members = append(w.members, &member{w: w, id: fmt.Sprintf("m%d", i), idx: i,
			rng: rand.New(rand.NewPCG(seed, uint64(i+1))), slow: slow, revoke: revoke})
	}
	return w
}

func (w *world) note(format string, args ...any) {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	w.res.Log = append(w.res.Log, fmt.Sprintf("%9.3fs %s", time.Since(w.start).Seconds(), fmt.Sprintf(format, args...)))
}

func (w *world) count(what string) {
	w.logMu.Lock()
	defer w.logMu.Unlock()
	w.res.Stats[what]++
}

func (w *world) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	w.note("PROBLEM: %s", p)
	w.logMu.Lock()
	defer w.logMu.Unlock()
	w.res.Problems = append(w.res.Problems, p)
}

func (w *world) ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// run is the whole schedule: start, faults, repair, checks, shutdown.
func (w *world) run() {
	for range w.cfg.Syncs {
		w.addSync()
	}
	for _, m := range w.members {
		w.note("%s's clock runs %.2f%% slow; revoke timeout %v", m.id, 100*m.slow, m.revoke)
		w.startMember(m)
	}
	w.faulty.Store(w.cfg.Misbehave)
	for i := range w.cfg.Steps {
		w.progress.Add(1)
		w.sleep(time.Duration(w.rng.Int64N(int64(time.Second))))
		w.runDue()
		w.step(i)
	}
	w.repair()
	w.checkLiveness()
	w.stopAll()
	w.checkRecord()
	w.res.Virtual = time.Since(w.start)
	if len(w.res.Problems) > 0 {
		w.res.CoordinatorLog = w.clog.String()
	}
	w.res.Intervals = len(w.rec.Intervals())
}

// sleep lets virtual time pass, running what falls due meanwhile.
func (w *world) sleep(d time.Duration) {
	end := time.Now().Add(d)
	for {
		w.runDue()
		next := end
		if len(w.due) > 0 && w.due[0].at.Before(next) {
			next = w.due[0].at
		}
		if !time.Now().Before(end) {
			return
		}
		time.Sleep(time.Until(next))
	}
}

func (w *world) later(d time.Duration, what string, do func()) {
	w.due = append(w.due, timed{at: time.Now().Add(d), what: what, do: do})
	slices.SortStableFunc(w.due, func(a, b timed) int { return a.at.Compare(b.at) })
}

func (w *world) runDue() {
	for len(w.due) > 0 && !w.due[0].at.After(time.Now()) {
		d := w.due[0]
		w.due = w.due[1:]
		w.note("%s", d.what)
		d.do()
	}
}

// step draws one action of the schedule.
func (w *world) step(i int) {
	live := w.live()
	m := w.members[w.rng.IntN(len(w.members))]
	switch k := w.rng.IntN(100); {
	case k < 8:
		if m.up() && len(live) > 1 {
			w.crash(m)
			w.later(w.randDur(3*w.cfg.TTL), m.id+" restarts", func() { w.startMember(m) })
		}
	case k < 13:
		if m.up() && len(live) > 1 {
			w.leave(m, false)
			w.later(w.randDur(2*w.cfg.TTL), m.id+" restarts", func() { w.startMember(m) })
		}
	case k < 17:
		if m.up() && len(live) > 1 {
			w.leave(m, true)
			w.later(w.randDur(2*w.cfg.TTL), m.id+" restarts", func() { w.startMember(m) })
		}
	case k < 27:
		w.addSync()
	case k < 33:
		w.removeSync()
	case k < 41:
		w.respec()
	case k < 47:
		w.breakSpec()
	case k < 53:
		w.fixSpec()
	case k < 61:
		if m.up() {
			d := w.randDur(2 * w.cfg.TTL)
			w.note("%s cut off for %v", m.id, d.Round(time.Millisecond))
			m.conn.Cut()
			conn := m.conn
			w.later(d, m.id+" healed", conn.Heal)
		}
	case k < 69:
		if m.up() {
			err := status.Error(codes.Unavailable, "sim: watch broken")
			if w.rng.IntN(2) == 0 {
				err = rpctypes.ErrGRPCNoLeader
			}
			if w.rng.IntN(3) == 0 {
				w.compact()
			}
			w.note("%s: watches broken (%v)", m.id, err)
			m.conn.BreakWatches(err)
		}
	case k < 73:
		w.compact()
	case k < 85:
		if m.up() {
			w.faultWindow(m)
		}
	case k < 88:
		if m.up() && len(live) > 1 {
			w.drainFromOutside(m)
			w.later(w.randDur(2*w.cfg.TTL), m.id+" restarts", func() { w.startMember(m) })
		}
	case k < 90:
		w.note("flood of 30 syncs")
		for range 30 {
			w.addSync()
		}
	case k < 93:
		w.loseLeader()
	case k < 98:
		if m.up() {
			w.fixInAGap(m)
		}
	default:
		w.note("nothing")
	}
}

func (w *world) randDur(max time.Duration) time.Duration {
	return time.Duration(w.rng.Int64N(int64(max))) + time.Millisecond
}

func (w *world) live() []*member {
	var out []*member
	for _, m := range w.members {
		if m.up() {
			out = append(out, m)
		}
	}
	return out
}

// ownership is one interval: a member running a sync with a token.
type ownership struct {
	member, sync string
	token        int64
}

func (w *world) leaseExpired(lease int64) {
	w.leaseMu.Lock()
	w.expired[lease] = time.Now()
	w.leaseMu.Unlock()
	w.count("lease expired")
}

// started records the lease of the owner key behind a new interval.
func (w *world) started(o ownership) {
	ctx, cancel := w.ctx(5 * time.Second)
	defer cancel()
	resp, err := w.admin.Get(ctx, w.layout.Owner(o.sync))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != o.token {
		return // already gone: the interval is short, its end is checked by the recorder
	}
	w.leaseMu.Lock()
	defer w.leaseMu.Unlock()
	w.leaseOf[o] = resp.Kvs[0].Lease
}

// ended notes when an interval ended, for checkLeases.
func (w *world) ended(o ownership) {
	w.leaseMu.Lock()
	defer w.leaseMu.Unlock()
	if lease, ok := w.leaseOf[o]; ok {
		delete(w.leaseOf, o)
		w.endings = append(w.endings, ending{o, lease, time.Now()})
	}
}

// ending is an interval that ended, with its owner key's lease.
type ending struct {
	ownership
	lease int64
	at    time.Time
}

// checkLeases checks that every interval whose owner key's lease expired
// in etcd had ended by then: a member must stop by its local deadline,
// which comes before etcd's.
func (w *world) checkLeases() {
	w.leaseMu.Lock()
	var late []string
	checked := 0
	for _, e := range w.endings {
		exp, ok := w.expired[e.lease]
		if !ok {
			continue
		}
		checked++
		if e.at.After(exp) {
			late = append(late, fmt.Sprintf("%s ran %s (token %d) %v past the expiry of its lease %x", e.member, e.sync, e.token, e.at.Sub(exp), e.lease))
		}
	}
	w.leaseMu.Unlock()
	w.logMu.Lock()
	w.res.Stats["intervals checked against their lease's expiry"] += checked
	w.logMu.Unlock()
	for _, l := range late {
		w.problem("%s", l)
	}
}

// faultWindow makes some of a member's requests fail for a while.
func (w *world) faultWindow(m *member) {
	kinds := []simetcd.Kind{simetcd.Refuse, simetcd.Lose, simetcd.Hang, simetcd.HangApplied}
	kind := kinds[w.rng.IntN(len(kinds))]
	p := 0.1 + 0.4*w.rng.Float64()
	delay := time.Duration(0)
	if w.rng.IntN(3) == 0 {
		delay = w.randDur(300 * time.Millisecond)
	}
	d := w.randDur(2 * w.cfg.TTL)
	names := map[simetcd.Kind]string{simetcd.Refuse: "refused", simetcd.Lose: "applied, answer lost", simetcd.Hang: "held", simetcd.HangApplied: "applied, answer held"}
	w.note("%s: for %v, %.0f%% of requests %s (delay up to %v)", m.id, d.Round(time.Millisecond), 100*p, names[kind], delay)
	m.conn.SetInjector(func(method string) simetcd.Fault {
		f := simetcd.Fault{}
		if delay > 0 {
			f.Delay = m.dur(delay)
		}
		if m.chance(p) {
			f.Kind = kind
		}
		return f
	})
	conn := m.conn
	w.later(d, m.id+": requests pass again", func() { conn.SetInjector(nil) })
}

// fixInAGap breaks the spec of a sync m runs and, once m has seen that,
// cuts m off; the leader drops the sync, the spec is fixed, the leader
// places it again (most likely on m, which now runs fewest), and history
// is compacted: m can only learn of the fix by reading the spec again when
// it reloads, with the sync in its target as before.
func (w *world) fixInAGap(m *member) {
	var ids []string
	for id, o := range w.rec.Owners() {
		if o == m.id && w.syncs[id] == valid {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	id := w.pick(ids)
	d := w.cfg.TTL/2 + w.randDur(w.cfg.TTL/2)
	w.note("%s: spec of %s broken, then %s cut off for %v while it is fixed and history compacted", m.id, id, m.id, d.Round(time.Millisecond))
	w.syncs[id] = invalid
	ctx, cancel := w.ctx(10 * time.Second)
	defer cancel()
	if _, err := w.admin.Put(ctx, w.layout.Sync(id), `{"spec":`); err != nil {
		w.t.Fatalf("break spec of %s: %v", id, err)
	}
	w.sleep(10 * time.Millisecond)
	m.conn.Cut()
	conn := m.conn
	w.later(d, m.id+" healed", conn.Heal)
	w.sleep(3 * w.cfg.Settle)
	w.syncs[id] = valid
	w.putSpec(id, 3000+w.rng.IntN(1000))
	w.sleep(3 * w.cfg.Settle)
	w.compact()
}

func (w *world) loseLeader() {
	w.loseMu.Lock()
	defer w.loseMu.Unlock()
	if w.restore != nil {
		return
	}
	d := w.randDur(w.cfg.TTL)
	w.note("etcd loses its leader for %v", d.Round(time.Millisecond))
	w.restore = w.srv.LoseLeader()
	// On a timer, not the schedule: the harness's own writes wait for the
	// leader too.
	time.AfterFunc(d, w.regainLeader)
}

func (w *world) regainLeader() {
	w.loseMu.Lock()
	defer w.loseMu.Unlock()
	if w.restore != nil {
		w.restore()
		w.restore = nil
		w.note("etcd has a leader again")
	}
}

func (w *world) compact() {
	rev := w.srv.Rev()
	w.note("compact at %d", rev)
	ctx, cancel := w.ctx(10 * time.Second)
	defer cancel()
	if _, err := w.admin.Compact(ctx, rev); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		w.note("compact: %v", err)
	}
}

func (w *world) syncIDs(state syncState) []string {
	var out []string
	for id, s := range w.syncs {
		if s == state {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (w *world) pick(ids []string) string { return ids[w.rng.IntN(len(ids))] }

func (w *world) putSpec(id string, v int) {
	ctx, cancel := w.ctx(10 * time.Second)
	defer cancel()
	if err := w.store.Put(ctx, assignment.Sync{ID: id, Spec: fmt.Appendf(nil, `{"v":%d}`, v)}); err != nil {
		w.t.Fatalf("put sync %s: %v", id, err)
	}
}

func (w *world) addSync() {
	id := fmt.Sprintf("s%03d", w.nextSync)
	w.nextSync++
	w.syncs[id] = valid
	w.note("add %s", id)
	w.putSpec(id, w.rng.IntN(1000))
}

func (w *world) removeSync() {
	ids := append(w.syncIDs(valid), w.syncIDs(invalid)...)
	if len(ids) == 0 {
		return
	}
	id := w.pick(ids)
	delete(w.syncs, id)
	w.note("remove %s", id)
	ctx, cancel := w.ctx(10 * time.Second)
	defer cancel()
	if err := w.store.Delete(ctx, id); err != nil {
		w.t.Fatalf("delete sync %s: %v", id, err)
	}
}

func (w *world) respec() {
	ids := w.syncIDs(valid)
	if len(ids) == 0 {
		return
	}
	id := w.pick(ids)
	w.note("new spec for %s", id)
	w.putSpec(id, 1000+w.rng.IntN(1000))
}

// breakSpec writes bytes that are no sync record at a sync's key.
func (w *world) breakSpec() {
	ids := w.syncIDs(valid)
	if len(ids) == 0 {
		return
	}
	id := w.pick(ids)
	w.syncs[id] = invalid
	w.note("broken spec for %s", id)
	ctx, cancel := w.ctx(10 * time.Second)
	defer cancel()
	if _, err := w.admin.Put(ctx, w.layout.Sync(id), `{"spec":`); err != nil {
		w.t.Fatalf("break spec of %s: %v", id, err)
	}
}

func (w *world) fixSpec() {
	ids := w.syncIDs(invalid)
	if len(ids) == 0 {
		return
	}
	id := w.pick(ids)
	w.syncs[id] = valid
	w.note("fixed spec for %s", id)
	w.putSpec(id, 2000+w.rng.IntN(1000))
}

// startMember starts a coordinator for m on a new connection and joins. A
// crashed predecessor's session may hold the ID for up to a TTL.
func (w *world) startMember(m *member) {
	if m.up() {
		return
	}
	m.conn = w.srv.Connect()
	m.conn.SetClockSkew(m.slow)
	m.cli = m.conn.Client()
	logger := slog.New(slog.NewTextHandler(&w.clog, &slog.HandlerOptions{Level: slog.LevelDebug})).With("member", m.id)
	h := handler{m: m, co: new(atomic.Pointer[coordinator.Coordinator])}
	var ch coordinator.Handler = h
	if m.idx%2 == 0 {
		// Every other member prepares the syncs that move to it.
		ch = preparer{h}
	}
	co, err := coordinator.New(m.cli, group, ch, coordinator.WithMemberID(m.id),
		coordinator.WithTTL(w.cfg.TTL), coordinator.WithSettle(w.cfg.Settle), coordinator.WithRevokeTimeout(m.revoke),
		coordinator.WithPrepareTimeout(w.cfg.TTL),
		coordinator.WithBalancer(balancer{m: m, next: rebalance.Sticky()}), coordinator.WithLogger(logger))
	if err != nil {
		w.t.Fatalf("%s: new: %v", m.id, err)
	}
	h.co.Store(co)
	for attempt := 0; ; attempt++ {
		ctx, cancel := w.ctx(3*w.cfg.TTL + 5*time.Second)
		err = co.Join(ctx)
		cancel()
		if err == nil {
			break
		}
		if attempt == 5 {
			w.problem("%s could not join in 6 tries: %v", m.id, err)
			_ = m.cli.Close()
			m.cli, m.conn = nil, nil
			return
		}
		w.note("%s: join: %v; again", m.id, err)
		w.sleep(time.Second)
	}
	m.co = co
	w.note("%s joined", m.id)
}

// crash closes m's client with no goodbye: the coordinator stops, its lease
// is left to expire.
func (w *world) crash(m *member) {
	w.note("%s crashes", m.id)
	_ = m.cli.Close()
	select {
	case <-m.co.Done():
	case <-time.After(w.cfg.TTL + 10*time.Second):
		w.problem("%s did not stop within TTL+10s of its client closing", m.id)
	}
	m.co, m.cli, m.conn = nil, nil, nil
}

// leave makes m leave (after a Drain when drain is set), then closes its
// client. Drain and Leave must return within their ctx.
func (w *world) leave(m *member, drain bool) {
	co := m.co
	bound := func(what string, d time.Duration, f func(context.Context) error) {
		ctx, cancel := w.ctx(d)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				w.note("%s: %s: %v", m.id, what, err)
			}
			return
		case <-time.After(d + time.Second):
			w.dumpGoroutines(what + " still running a second after its ctx")
		}
		select {
		case err := <-done:
			if err != nil {
				w.note("%s: %s: %v", m.id, what, err)
			}
		case <-time.After(time.Second):
			w.problem("%s: %s did not return within its ctx (%v) plus 2s", m.id, what, d)
			w.dumpGoroutines(what + " overran its ctx")
			<-done
		}
	}
	if drain {
		w.note("%s drains", m.id)
		bound("Drain", w.randDur(2*w.cfg.TTL), co.Drain)
	}
	w.note("%s leaves", m.id)
	bound("Leave", w.randDur(3*w.cfg.TTL), co.Leave)
	_ = m.cli.Close()
	<-co.Done()
	m.co, m.cli, m.conn = nil, nil, nil
}

// drainFromOutside drains m as an operator's tool does (Admin.Drain, on a
// fault-free client), which must return within its ctx, then makes m
// leave.
func (w *world) drainFromOutside(m *member) {
	d := w.randDur(2 * w.cfg.TTL)
	w.note("%s drained from outside (ctx %v)", m.id, d.Round(time.Millisecond))
	adm, err := coordinator.NewAdmin(w.admin, group)
	if err != nil {
		w.t.Fatalf("admin: %v", err)
	}
	ctx, cancel := w.ctx(d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- adm.Drain(ctx, m.id) }()
	select {
	case err := <-done:
		if err != nil {
			w.note("Admin.Drain(%s): %v", m.id, err)
		}
	case <-time.After(d + 2*time.Second):
		w.problem("Admin.Drain(%s) did not return within its ctx (%v) plus 2s", m.id, d)
		<-done
	}
	w.leave(m, false)
}

// repair ends every fault and starts every member.
func (w *world) repair() {
	w.faulty.Store(false)
	w.note("faults end")
	for len(w.due) > 0 {
		w.sleep(time.Until(w.due[len(w.due)-1].at) + time.Millisecond)
	}
	w.regainLeader()
	for _, m := range w.members {
		if m.up() {
			m.conn.Heal()
			m.conn.SetInjector(nil)
		}
	}
	for _, m := range w.members {
		w.startMember(m)
	}
}

// checkLiveness waits for every valid sync to run on exactly one live
// member, as its owner key says, and for no owner key of another sync:
// within TTL + Settle + 1s of the last join, plus 3 TTLs for a request
// sent during the faults and held until its bound (the leader's view load
// has the longest, 3 TTLs). It waits up to a minute to tell a slow repair
// from none.
func (w *world) checkLiveness() {
	start := time.Now()
	bound := 4*w.cfg.TTL + w.cfg.Settle + time.Second
	var atBound string
	for {
		why := w.converged()
		if why == "" {
			w.res.Converged = time.Since(start)
			w.note("converged after %v", w.res.Converged.Round(time.Millisecond))
			if atBound != "" {
				w.problem("converged only after %v (bound %v); at the bound: %s", w.res.Converged.Round(time.Millisecond), bound, atBound)
			}
			return
		}
		if atBound == "" && time.Since(start) > bound {
			atBound = why
		}
		if time.Since(start) > time.Minute {
			w.problem("not converged a minute after the faults ended and every member joined: %s; %s", why, w.describe())
			w.dumpGoroutines("the liveness check gave up")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *world) converged() string {
	owners := w.rec.Owners()
	ctx, cancel := w.ctx(5 * time.Second)
	defer cancel()
	resp, err := w.admin.Get(ctx, w.layout.Owners(), clientv3.WithPrefix())
	if err != nil {
		return err.Error()
	}
	keyOwner := map[string]string{}
	for _, kv := range resp.Kvs {
		keyOwner[strings.TrimPrefix(string(kv.Key), w.layout.Owners())] = string(kv.Value)
	}
	liveIDs := map[string]bool{}
	for _, m := range w.live() {
		liveIDs[m.id] = true
	}
	var bad []string
	for _, id := range w.syncIDs(valid) {
		o := owners[id]
		switch {
		case o == "":
			bad = append(bad, id+" runs nowhere")
		case !liveIDs[o]:
			bad = append(bad, fmt.Sprintf("%s runs on %s, which is not live", id, o))
		case !strings.Contains(keyOwner[id], o):
			bad = append(bad, fmt.Sprintf("%s runs on %s but its owner key says %q", id, o, keyOwner[id]))
		}
	}
	for id, o := range owners {
		if st, ok := w.syncs[id]; !ok || st != valid {
			bad = append(bad, fmt.Sprintf("%s (removed or invalid) still runs on %s", id, o))
		}
	}
	for id, v := range keyOwner {
		if st, ok := w.syncs[id]; !ok || st != valid {
			bad = append(bad, fmt.Sprintf("owner key of %s (removed or invalid) held: %s", id, v))
		}
	}
	slices.Sort(bad)
	if len(bad) == 0 {
		return w.unbalanced(owners)
	}
	return strings.Join(bad, "; ")
}

// unbalanced says which syncs the Balancer's own rule would still move:
// a converged group is a fixed point of Sticky (every member within its
// share, nothing to move).
func (w *world) unbalanced(owners map[string]string) string {
	var in rebalance.Input
	for _, m := range w.live() {
		in.Members = append(in.Members, assignment.Member{ID: m.id})
	}
	for _, id := range w.syncIDs(valid) {
		in.Syncs = append(in.Syncs, assignment.Sync{ID: id})
	}
	slices.SortFunc(in.Members, func(a, b assignment.Member) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(in.Syncs, func(a, b assignment.Sync) int { return strings.Compare(a.ID, b.ID) })
	in.Current = assignment.Plan(owners)
	plan, err := rebalance.Sticky().Balance(context.Background(), in)
	if err != nil {
		return "Sticky on the converged group: " + err.Error()
	}
	var moves []string
	for id, to := range plan {
		if owners[id] != to {
			moves = append(moves, fmt.Sprintf("%s %s→%s", id, owners[id], to))
		}
	}
	if len(moves) == 0 {
		return ""
	}
	slices.Sort(moves)
	return "not balanced: Sticky would still move " + strings.Join(moves, ", ")
}

// describe summarises the group as Describe reads it, for a failure.
func (w *world) describe() string {
	ctx, cancel := w.ctx(5 * time.Second)
	defer cancel()
	st, err := coordinator.Describe(ctx, w.admin, group)
	if err != nil {
		return "describe: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "leader %q, generation %d, pending %d, plan error %q; members:", st.Leader, st.Generation, st.Pending, st.PlanError)
	for _, m := range st.Members {
		fmt.Fprintf(&b, " %s(targeted %d, owned %d)", m.ID, m.Targeted, m.Owned)
	}
	b.WriteString("; syncs:")
	for _, sy := range st.Syncs {
		fmt.Fprintf(&b, " %s→%s/%s", sy.ID, sy.Target, sy.Owner)
	}
	for _, m := range w.members {
		if m.up() {
			fmt.Fprintf(&b, "; %s leader=%v owned=%d", m.id, m.co.IsLeader(), len(m.co.Owned()))
		}
	}
	return b.String()
}

// dumpGoroutines adds every goroutine's stack to the coordinators' log.
func (w *world) dumpGoroutines(when string) {
	var stacks bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
	_, _ = w.clog.Write([]byte("\n=== goroutines when " + when + ":\n" + stacks.String()))
}

// syncBuffer is a bytes.Buffer for many writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// stopAll makes every member leave.
func (w *world) stopAll() {
	for _, m := range w.members {
		if m.up() {
			w.leave(m, false)
		}
	}
}

// checkRecord checks the single-owner invariant over the whole run.
func (w *world) checkRecord() {
	w.checkLeases()
	if err := w.rec.Check(); err != nil {
		w.problem("ownership record: %v", err)
	}
	if open := w.rec.Owners(); len(open) != 0 {
		w.problem("intervals still open after every member left: %v", open)
	}
}

// hanging registers a Balancer call about to hang on purpose; returned
// marks it done. Once the world closes, ok is false and the call must not
// hang: the bubble's main goroutine waits for the registered ones only.
// (A WaitGroup's Add may not race with its Wait.)
func (w *world) hanging() (returned func(), ok bool) {
	w.hungMu.Lock()
	defer w.hungMu.Unlock()
	if w.closing {
		return nil, false
	}
	c := make(chan struct{})
	w.hung = append(w.hung, c)
	return func() { close(c) }, true
}

func (w *world) close() {
	// The coordinators do not wait for an abandoned Balancer call; the
	// bubble must, before it ends.
	w.hungMu.Lock()
	w.closing = true
	hung := w.hung
	w.hungMu.Unlock()
	w.releaseAll()
	for _, c := range hung {
		<-c
	}
	for _, m := range w.members {
		if m.cli != nil {
			_ = m.cli.Close()
		}
	}
	_ = w.admin.Close()
	w.srv.Close()
}
