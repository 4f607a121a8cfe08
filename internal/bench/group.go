package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// groupRun is one group of one system in one scenario: its syncs, its
// members and the tracker their handlers report to.
type groupRun struct {
	b      *bench
	sys    system
	group  string
	n      int // syncs
	tr     *tracker
	all    []member          // every member ever joined, for traffic totals
	live   map[string]member // not crashed, not left
	active map[string]bool   // live and not draining: who should run syncs
	// runs counts the processes started with each member ID. The tracker
	// knows a member by its process: the second process of m00 reports
	// as m00#2, so that the first one's late events (a crashed process
	// is dead to the tracker) never pass for the second's.
	runs map[string]int
}

// incarnation is a member reported to the tracker under the name of its
// process (see groupRun.runs).
type incarnation struct {
	member
	name string
}

func (m incarnation) id() string { return m.name }

// renamed reports to a tracker under another member name.
type renamed struct {
	reporter
	name string
}

func (r renamed) assign(_, sync string, token int64) { r.reporter.assign(r.name, sync, token) }
func (r renamed) revoke(_, sync string, token int64) { r.reporter.revoke(r.name, sync, token) }

// memberOf is the member ID of a tracker name.
func memberOf(name string) string {
	id, _, _ := strings.Cut(name, "#")
	return id
}

func (b *bench) newGroup(ctx context.Context, sys system, label string, nSyncs int) (*groupRun, error) {
	b.seq++
	g := &groupRun{
		b: b, sys: sys, n: nSyncs, tr: newTracker(),
		group:  fmt.Sprintf("%s-%s-%d", label, sys.name(), b.seq),
		live:   map[string]member{},
		active: map[string]bool{},
		runs:   map[string]int{},
	}
	if err := b.env.putSyncs(ctx, g.group, nSyncs); err != nil {
		return nil, err
	}
	return g, nil
}

func memberIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return out
}

// join starts the members ids concurrently, as processes starting together
// would, and returns once all are registered.
func (g *groupRun) join(ctx context.Context, ids ...string) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, id := range ids {
		g.runs[id]++
		name := id
		var rep reporter = g.tr
		if n := g.runs[id]; n > 1 {
			name = fmt.Sprintf("%s#%d", id, n)
			rep = renamed{g.tr, name}
		}
		wg.Go(func() {
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			m, err := g.sys.join(jctx, g.group, id, rep)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if name != id {
				m = incarnation{m, name}
			}
			g.all = append(g.all, m)
			g.live[name] = m
			g.active[name] = true
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// settle waits until the group is balanced (see balanced) and then quiet,
// and returns the instant it became balanced.
func (g *groupRun) settle(ctx context.Context, timeout time.Duration) (int64, error) {
	cond := balanced(g.n, g.active)
	if ex, ok := g.sys.(interface{ exact() bool }); ok && !ex.exact() {
		cond = covered(g.n, g.active)
	}
	at, err := g.tr.waitFor(ctx, timeout, g.group+" balanced", cond)
	if err != nil {
		return 0, err
	}
	return at, g.tr.waitQuiet(ctx, g.b.quiet(), timeout)
}

// usage sums the traffic of every member the group ever had.
func (g *groupRun) usage() usage {
	var u usage
	for _, m := range g.all {
		u = u.add(m.usage())
	}
	return u
}

// leader returns the live member that leads, if any.
func (g *groupRun) leader() member {
	for _, id := range slices.Sorted(maps.Keys(g.live)) {
		if g.live[id].isLeader() {
			return g.live[id]
		}
	}
	return nil
}

// nonLeader returns the first live member, by ID, that does not lead.
func (g *groupRun) nonLeader() member {
	for _, id := range slices.Sorted(maps.Keys(g.live)) {
		if !g.live[id].isLeader() {
			return g.live[id]
		}
	}
	return nil
}

// crash crashes m at the instant at (already given to the tracker) and
// forgets it.
func (g *groupRun) crash(m member, at int64) {
	g.tr.kill(m.id(), at)
	m.crash()
	delete(g.live, m.id())
	delete(g.active, m.id())
}

// close crashes every live member, waits for them to stop, and removes the
// group's keys and leases from etcd.
func (g *groupRun) close() {
	for _, m := range g.live {
		m.crash()
	}
	timeout := time.After(30 * time.Second)
	for _, m := range g.live {
		select {
		case <-m.stopped():
		case <-timeout:
			fmt.Fprintf(os.Stderr, "bench: %s: member %s did not stop\n", g.group, m.id())
		}
	}
	g.live = map[string]member{}
	if gc, ok := g.sys.(interface{ closeGroup(string) }); ok {
		gc.closeGroup(g.group)
	}
	g.b.checks[g.group] = "ok"
	if err := g.tr.rec.Check(); err != nil {
		g.b.checks[g.group] = err.Error()
		fmt.Fprintf(os.Stderr, "bench: %s: single-owner check failed: %v\n", g.group, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.b.env.dropGroup(ctx, g.group); err != nil {
		fmt.Fprintf(os.Stderr, "bench: drop %s: %v\n", g.group, err)
	}
}

// debugDump prints each baseline member's view, after a timeout.
func (g *groupRun) debugDump() {
	for _, id := range slices.Sorted(maps.Keys(g.live)) {
		if bm, ok := g.live[id].(*baselineMember); ok {
			fmt.Fprintln(os.Stderr, "  ", bm.debugState())
		}
	}
}
