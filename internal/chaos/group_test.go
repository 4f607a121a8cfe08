package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/recorder"
)

// config sizes one in-process run.
type config struct {
	ttl    time.Duration // membership lease TTL of every member
	settle time.Duration
	syncs  int // base syncs, always present
}

// Member slots: m0, m1 and m2 reach etcd only through etcd member 0, 1 and
// 2, so cutting that member's bridge cuts them off; m3 and the spare m4
// (which joins and leaves) reach etcd through members 1 and 2. Cutting
// etcd member 0's bridge is therefore a clean cut-off of m0 alone, while
// cutting 1's or 2's also partitions an etcd member from m3 and m4.
const (
	baseSlots = 4
	spareSlot = 4
	allSlots  = 5
)

// group is one Baton group under test: its members (slots), the recorder of
// every ownership interval, and the timeline of what was done to it.
type group struct {
	t       *testing.T
	cfg     config
	cl      *etcdtest.Cluster
	name    string
	admin   *clientv3.Client   // to all etcd members
	adminTo []*clientv3.Client // one per etcd member
	rec     *recorder.Recorder
	log     *ringLog
	logger  *slog.Logger
	slots   []*slot
	specSeq atomic.Int64

	etcdLane, memberLane laneState
	// away has bit i set while etcd member i is cut off, paused or
	// stopped: the checks read through another one, so that a request
	// stuck on it does not pass for a group that has not recovered.
	away atomic.Uint32

	mu         sync.Mutex
	problems   []string // failures seen off the test goroutine
	timeline   []string
	recoveries []recovery
	revokes    map[string]int // by reason
	panics     int
	errs       int
}

func newGroup(t *testing.T, cl *etcdtest.Cluster, cfg config, name string) *group {
	t.Helper()
	g := &group{
		t:       t,
		cfg:     cfg,
		cl:      cl,
		name:    name,
		admin:   cl.Client(t),
		rec:     recorder.New(),
		log:     newRingLog(3000),
		revokes: map[string]int{},
	}
	g.logger = slog.New(slog.NewTextHandler(g.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for i := range cl.Size() {
		g.adminTo = append(g.adminTo, cl.ClientTo(t, i))
	}
	for i := range allSlots {
		s := &slot{g: g, idx: i, id: fmt.Sprintf("m%d", i), updater: i%2 == 1, preparer: i%4 < 2}
		if i < cl.Size() {
			s.endpoints = []string{cl.Endpoint(i)}
		} else {
			s.endpoints = cl.Endpoints()[1:]
		}
		g.slots = append(g.slots, s)
	}
	t.Cleanup(g.stopAll)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ops := make([]clientv3.Op, 0, cfg.syncs)
	for i := range cfg.syncs {
		ops = append(ops, clientv3.OpPut(g.syncKey(baseSync(i)), specJSON(0)))
	}
	for chunk := range slices.Chunk(ops, 100) {
		if _, err := g.admin.Txn(ctx).Then(chunk...).Commit(); err != nil {
			t.Fatalf("put base syncs: %v", err)
		}
	}
	return g
}

func baseSync(i int) string { return fmt.Sprintf("s%02d", i) }

// specJSON is a sync envelope as SyncStore writes it.
func specJSON(v int64) string { return fmt.Sprintf(`{"spec":{"v":%d}}`, v) }

func (g *group) syncKey(id string) string {
	return coordinator.DefaultPrefix + "/" + g.name + "/syncs/" + id
}

func (g *group) targetKey(member string) string {
	return coordinator.DefaultPrefix + "/" + g.name + "/targets/" + member
}

// reader is a client for the checks' reads: one to an etcd member that is
// not away, if any.
func (g *group) reader() *clientv3.Client {
	away := g.away.Load()
	for i, cli := range g.adminTo {
		if away&(1<<i) == 0 {
			return cli
		}
	}
	return g.admin
}

func (g *group) setAway(i int, away bool) {
	for {
		old := g.away.Load()
		next := old &^ (1 << i)
		if away {
			next = old | 1<<i
		}
		if g.away.CompareAndSwap(old, next) {
			return
		}
	}
}

// note adds a line to the timeline (and to the log).
func (g *group) note(format string, args ...any) {
	line := fmt.Sprintf("%8.3fs %s", time.Since(g.log.start).Seconds(), fmt.Sprintf(format, args...))
	g.log.add("chaos: " + fmt.Sprintf(format, args...))
	g.mu.Lock()
	g.timeline = append(g.timeline, line)
	g.mu.Unlock()
}

// problem records a failure seen off the test goroutine; the run fails
// with it at the end.
func (g *group) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	g.note("PROBLEM: %s", msg)
	g.mu.Lock()
	g.problems = append(g.problems, msg)
	g.mu.Unlock()
}

func (g *group) liveIDs() []string {
	var out []string
	for _, s := range g.slots {
		if s.isUp() {
			out = append(out, s.id)
		}
	}
	return out
}

// leaderSlot is the slot whose coordinator leads now, or nil.
func (g *group) leaderSlot() *slot {
	for _, s := range g.slots {
		if co := s.coordinator(); co != nil && co.IsLeader() {
			return s
		}
	}
	return nil
}

// stopAll makes every member leave (or stop, if its etcd is gone) and
// closes every client; it is the cleanup of the run. Members leave one
// after another: members leaving at once all drain, and each drain waits
// for a member that is not draining.
func (g *group) stopAll() {
	for _, s := range g.slots {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_ = s.leave(ctx)
		cancel()
	}
}

// mode is how a member's callbacks misbehave; the zero mode is well behaved.
type mode struct {
	name        string
	assignDelay time.Duration // each OnAssign takes up to this long (less if ctx ends)
	revokeDelay time.Duration
	updateDelay time.Duration
	assignPanic float64 // probability
	assignErr   float64
	revokePanic float64
	updatePanic float64
}

var modes = map[string]mode{
	"slow":   {name: "slow", assignDelay: 300 * time.Millisecond, revokeDelay: 400 * time.Millisecond, updateDelay: 200 * time.Millisecond},
	"panic":  {name: "panic", assignPanic: 0.3, revokePanic: 0.3, updatePanic: 0.3},
	"error":  {name: "error", assignErr: 0.4},
	"mixed":  {name: "mixed", assignDelay: 150 * time.Millisecond, revokeDelay: 200 * time.Millisecond, assignPanic: 0.15, assignErr: 0.15, revokePanic: 0.15, updatePanic: 0.15},
	"normal": {name: "normal"},
}

// slot is one member ID, run by one coordinator at a time.
type slot struct {
	g         *group
	idx       int
	id        string
	endpoints []string
	updater   bool // its handler implements coordinator.Updater
	preparer  bool // its handler implements coordinator.Preparer
	options   []coordinator.Option
	mode      atomic.Pointer[mode]

	mu  sync.Mutex
	cli *clientv3.Client
	co  *coordinator.Coordinator
}

func (s *slot) coordinator() *coordinator.Coordinator {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.co
}

func (s *slot) isUp() bool { return s.coordinator() != nil }

func (s *slot) handler() coordinator.Handler {
	h := plainHandler{s}
	switch {
	case s.updater && s.preparer:
		return struct {
			updaterHandler
			preparerHandler
		}{updaterHandler{h}, preparerHandler{s}}
	case s.updater:
		return updaterHandler{h}
	case s.preparer:
		return struct {
			plainHandler
			preparerHandler
		}{h, preparerHandler{s}}
	}
	return h
}

// start runs a new coordinator for the slot and joins; it fails if Join
// does not succeed within the join timeout.
func (s *slot) start(ctx context.Context) error {
	if s.isUp() {
		return nil
	}
	cli, err := clientv3.New(etcdtest.ClientConfig(s.endpoints))
	if err != nil {
		return err
	}
	co, err := coordinator.New(cli, s.g.name, s.handler(), append([]coordinator.Option{
		coordinator.WithMemberID(s.id), coordinator.WithTTL(s.g.cfg.ttl), coordinator.WithSettle(s.g.cfg.settle),
		coordinator.WithPrepareTimeout(s.g.cfg.ttl),
		coordinator.WithLogger(s.g.logger.With("slot", s.id))}, s.options...)...)
	if err != nil {
		_ = cli.Close()
		return err
	}
	// A crashed predecessor's session holds the ID until its lease
	// expires, and etcd may be down for a while.
	jctx, cancel := context.WithTimeout(ctx, 3*s.g.cfg.ttl+10*time.Second)
	defer cancel()
	if err := co.Join(jctx); err != nil {
		_ = cli.Close()
		return fmt.Errorf("%s: join: %w", s.id, err)
	}
	s.mu.Lock()
	s.cli, s.co = cli, co
	s.mu.Unlock()
	s.g.note("%s joined", s.id)
	return nil
}

// startRetry starts the slot, trying again until ctx ends.
func (s *slot) startRetry(ctx context.Context) error {
	for {
		err := s.start(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		s.g.note("%s: %v; trying again", s.id, err)
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return err
		}
	}
}

// crash closes the member's client without a goodbye: its coordinator must
// stop (revoking everything with Shutdown) and its lease is left to expire.
func (s *slot) crash() error {
	s.mu.Lock()
	cli, co := s.cli, s.co
	s.cli, s.co = nil, nil
	s.mu.Unlock()
	if co == nil {
		return nil
	}
	s.g.note("%s crashes (client closed)", s.id)
	_ = cli.Close()
	select {
	case <-co.Done():
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s did not stop within 15s of its client closing", s.id)
	}
	if co.Err() == nil {
		return fmt.Errorf("%s stopped after its client closed but reports no error", s.id)
	}
	return nil
}

// leave makes the member leave gracefully and closes its client.
func (s *slot) leave(ctx context.Context) error {
	s.mu.Lock()
	cli, co := s.cli, s.co
	s.cli, s.co = nil, nil
	s.mu.Unlock()
	if co == nil {
		return nil
	}
	defer cli.Close()
	select {
	case <-co.Done():
		return fmt.Errorf("%s had stopped on its own before Leave: %v", s.id, co.Err())
	default:
	}
	s.g.note("%s leaves", s.id)
	err := co.Leave(ctx)
	if err != nil && !strings.Contains(err.Error(), "complete drain") {
		return fmt.Errorf("%s: leave: %w", s.id, err)
	}
	select {
	case <-co.Done():
	default:
		return fmt.Errorf("%s: Leave returned before Done", s.id)
	}
	if co.Err() != nil {
		return fmt.Errorf("%s: Err after Leave: %w", s.id, co.Err())
	}
	return nil
}

var errChaos = errors.New("chaos: injected OnAssign error")

// plainHandler records every ownership interval and misbehaves as its
// slot's mode says.
type plainHandler struct{ s *slot }

func (h plainHandler) OnAssign(ctx context.Context, c *assignment.Claim) error {
	s := h.s
	s.g.rec.Start(s.id, c.ID(), c.Token())
	m := s.mode.Load()
	if m == nil {
		return nil
	}
	if m.assignDelay > 0 {
		sleepCtx(ctx, randDur(m.assignDelay))
	}
	if chance(m.assignPanic) {
		s.g.count("panic")
		panic("chaos: injected OnAssign panic")
	}
	if chance(m.assignErr) {
		s.g.count("error")
		return errChaos
	}
	return nil
}

func (h plainHandler) OnRevoke(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
	s := h.s
	s.g.count(why.String())
	m := s.mode.Load()
	if m != nil && m.revokeDelay > 0 {
		// A slow but well-behaved handler: it stops by ctx's deadline.
		sleepCtx(ctx, randDur(m.revokeDelay))
	}
	s.g.rec.End(s.id, c.ID(), c.Token())
	if m != nil && chance(m.revokePanic) {
		s.g.count("panic")
		panic("chaos: injected OnRevoke panic (after stopping the work)")
	}
}

// preparerHandler prepares a sync that moves to its slot: it takes up to
// the mode's assign delay (less if ctx ends), and panics or fails as often
// as the mode's OnAssign does. It never owns: the recorder checks that
// the sync runs elsewhere meanwhile only through the single-owner rule.
type preparerHandler struct{ s *slot }

func (h preparerHandler) OnPrepare(ctx context.Context, _ assignment.Sync) error {
	s := h.s
	s.g.count("prepare")
	m := s.mode.Load()
	if m == nil {
		return nil
	}
	if m.assignDelay > 0 {
		sleepCtx(ctx, randDur(m.assignDelay))
	}
	if chance(m.assignPanic) {
		s.g.count("panic")
		panic("chaos: injected OnPrepare panic")
	}
	if chance(m.assignErr) {
		s.g.count("error")
		return errChaos
	}
	return nil
}

type updaterHandler struct{ plainHandler }

func (h updaterHandler) OnUpdate(ctx context.Context, c *assignment.Claim) {
	m := h.s.mode.Load()
	if m == nil {
		return
	}
	if m.updateDelay > 0 {
		sleepCtx(ctx, randDur(m.updateDelay))
	}
	if chance(m.updatePanic) {
		h.s.g.count("panic")
		panic("chaos: injected OnUpdate panic")
	}
}

func (g *group) count(what string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch what {
	case "panic":
		g.panics++
	case "error":
		g.errs++
	default:
		g.revokes[what]++
	}
}

func (g *group) stats() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(g.revokes)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, g.revokes[k]))
	}
	return fmt.Sprintf("revokes{%s} injected panics=%d errors=%d intervals=%d",
		strings.Join(parts, " "), g.panics, g.errs, len(g.rec.Intervals()))
}

func chance(p float64) bool { return p > 0 && rand.Float64() < p }

func randDur(max time.Duration) time.Duration { return rand.N(max) + 1 }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ringLog keeps the last lines of the coordinators' logs and of the
// timeline, to print when a run fails.
type ringLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
	next  int
	n     int
}

func newRingLog(n int) *ringLog {
	return &ringLog{start: time.Now(), lines: make([]string, n)}
}

// Write takes one slog record.
func (r *ringLog) Write(p []byte) (int, error) {
	r.add(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (r *ringLog) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = fmt.Sprintf("%8.3fs %s", time.Since(r.start).Seconds(), line)
	r.next = (r.next + 1) % len(r.lines)
	r.n = min(r.n+1, len(r.lines))
}

// tail returns the last n lines.
func (r *ringLog) tail(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, r.n)
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, r.lines[(r.next-n+i+2*len(r.lines))%len(r.lines)])
	}
	return out
}
