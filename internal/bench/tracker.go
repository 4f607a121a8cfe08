package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/recorder"
)

// tracker is what the handlers of one scenario's members report to: every
// ownership interval goes to a recorder (for gaps and the single-owner
// check), and the tracker keeps who runs what now so a scenario can wait
// for a condition and learn the exact instant it became true.
type tracker struct {
	rec *recorder.Recorder

	mu sync.Mutex
	// holders are the members running each sync now, in start order: one,
	// but two while a system overlaps (dskit's ring does).
	holders    map[string][]string
	owner      map[string]string // sync -> the member of holders that started last
	started    map[string]int64  // sync -> start of owner's interval (recorder.Now)
	per        map[string]int    // member -> syncs it runs
	shared     int               // syncs with more than one holder
	dead       map[string]bool   // crashed members: their callbacks are ignored
	assigns    int
	lastChange int64
	waiters    []*waiter
}

type waiter struct {
	cond func(*tracker) bool
	done chan struct{}
	at   int64
}

func newTracker() *tracker {
	return &tracker{
		rec:     recorder.New(),
		holders: map[string][]string{},
		owner:   map[string]string{},
		started: map[string]int64{},
		per:     map[string]int{},
		dead:    map[string]bool{},
	}
}

// reporter is what a member's handler tells when a sync starts or stops
// running on it: the scenario's tracker, or (a member in its own process)
// the recorder that writes to its parent.
type reporter interface {
	assign(member, sync string, token int64)
	revoke(member, sync string, token int64)
}

// assign is called at the start of OnAssign (or when a lock is won).
func (t *tracker) assign(member, sync string, token int64) {
	t.assignAt(member, sync, token, recorder.Now())
}

// assignAt is assign at the instant now: a member in another process
// reports when it happened there.
func (t *tracker) assignAt(member, sync string, token, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead[member] {
		return
	}
	t.rec.StartAt(member, sync, token, now)
	if !slices.Contains(t.holders[sync], member) {
		// A second holder is two owners at once: the recorder reports
		// it; the counts follow what runs.
		t.holders[sync] = append(t.holders[sync], member)
		if len(t.holders[sync]) == 2 {
			t.shared++
		}
		t.per[member]++
	}
	t.owner[sync] = member
	t.started[sync] = now
	t.assigns++
	t.changedLocked(now)
}

// revoke is called when OnRevoke returns (or just before a lock is
// released): the sync stops running on member.
func (t *tracker) revoke(member, sync string, token int64) {
	t.revokeAt(member, sync, token, recorder.Now())
}

// revokeAt is revoke at the instant now.
func (t *tracker) revokeAt(member, sync string, token, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead[member] {
		return
	}
	t.rec.EndAt(member, sync, token, now)
	t.dropLocked(member, sync)
	t.changedLocked(now)
}

// dropLocked removes member from sync's holders.
func (t *tracker) dropLocked(member, sync string) {
	i := slices.Index(t.holders[sync], member)
	if i < 0 {
		return
	}
	hs := slices.Delete(t.holders[sync], i, i+1)
	if len(hs) == 1 {
		t.shared--
	}
	t.per[member]--
	if t.per[member] == 0 {
		delete(t.per, member)
	}
	if len(hs) == 0 {
		delete(t.holders, sync)
		delete(t.owner, sync)
		delete(t.started, sync)
		return
	}
	t.holders[sync] = hs
	if t.owner[sync] == member {
		// The other holder goes on. Its own start is not kept: started
		// stays the dropped holder's, a later instant than the true one.
		t.owner[sync] = hs[len(hs)-1]
	}
}

// kill records that member's process died at time at: everything it ran
// stopped then, and whatever its code does afterwards is not real.
func (t *tracker) kill(member string, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dead[member] = true
	t.rec.EndMember(member, at)
	for s, hs := range t.holders {
		if slices.Contains(hs, member) {
			t.dropLocked(member, s)
		}
	}
	t.changedLocked(at)
}

// changedLocked wakes the waiters whose condition now holds. Events of
// members in other processes arrive out of time order, so lastChange is the
// latest instant seen.
func (t *tracker) changedLocked(now int64) {
	t.lastChange = max(t.lastChange, now)
	kept := t.waiters[:0]
	for _, w := range t.waiters {
		if w.cond(t) {
			w.at = t.lastChange
			close(w.done)
			continue
		}
		kept = append(kept, w)
	}
	t.waiters = kept
}

// waitFor waits until cond holds (cond runs under the tracker's lock, on
// every change) and returns the instant of the change that made it true.
func (t *tracker) waitFor(ctx context.Context, timeout time.Duration, what string, cond func(*tracker) bool) (int64, error) {
	t.mu.Lock()
	if cond(t) {
		now := t.lastChange
		t.mu.Unlock()
		return now, nil
	}
	w := &waiter{cond: cond, done: make(chan struct{})}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-w.done:
		return w.at, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, x := range t.waiters {
		if x == w {
			t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
			break
		}
	}
	select {
	case <-w.done:
		return w.at, nil
	default:
	}
	return 0, fmt.Errorf("%s: not reached in %v (%d owned, per member %v)", what, timeout, len(t.owner), t.per)
}

// waitQuiet waits until nothing changed for quiet.
func (t *tracker) waitQuiet(ctx context.Context, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		t.mu.Lock()
		idle := time.Duration(recorder.Now() - t.lastChange)
		t.mu.Unlock()
		if idle >= quiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ownership still changing after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(quiet - idle):
		}
	}
}

// owners returns a copy of who runs what.
func (t *tracker) owners() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.owner)
}

func (t *tracker) perMember() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.per)
}

func (t *tracker) assignCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.assigns
}

// balanced is the condition a scenario waits for after a change: all n
// syncs run, each on one member, only on the members in active (a
// draining member runs none), and each of those runs its share rounded
// down or up.
func balanced(n int, active map[string]bool) func(*tracker) bool {
	k := max(len(active), 1)
	return shares(n, active, n/k, (n+k-1)/k)
}

// shares holds when all n syncs run, each on one member, only on members in
// active, and each of those runs between lo and hi.
func shares(n int, active map[string]bool, lo, hi int) func(*tracker) bool {
	return func(t *tracker) bool {
		if len(t.owner) != n || t.shared > 0 {
			return false
		}
		for m, c := range t.per {
			if c > 0 && !active[m] {
				return false
			}
		}
		for m := range active {
			if c := t.per[m]; c < lo || c > hi {
				return false
			}
		}
		return true
	}
}

// covered is balanced for a system whose shares are uneven by design (the
// ring's follow its random tokens): all n syncs run, each on one member,
// only on members in active, and each of those runs some.
func covered(n int, active map[string]bool) func(*tracker) bool {
	return shares(n, active, 1, n)
}

// allOwned holds when n syncs run.
func allOwned(n int) func(*tracker) bool {
	return func(t *tracker) bool { return len(t.owner) == n }
}

// loadSpread returns the busiest member's load over the mean load of the
// members in active.
func loadSpread(per map[string]int, active map[string]bool) float64 {
	total, hi := 0, 0
	for m, c := range per {
		if active[m] {
			total += c
			hi = max(hi, c)
		}
	}
	if total == 0 || len(active) == 0 {
		return 0
	}
	return float64(hi) / (float64(total) / float64(len(active)))
}

// discard is the reporter of a member nobody watches (one whose memory is
// measured).
type discard struct{}

func (discard) assign(string, string, int64) {}
func (discard) revoke(string, string, int64) {}
