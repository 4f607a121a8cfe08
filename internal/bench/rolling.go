package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/baton-go/baton/internal/recorder"
)

// rollingRun is one rolling restart of a whole group: every member in
// turn goes and comes back with its member ID, the next one once the
// group is balanced and quiet again.
type rollingRun struct {
	// Mode "restart": the member's process dies (its client is closed, its
	// lease left to expire) and a new one with its ID starts at once,
	// which waits for the old lease. "leave": the member calls Leave (a
	// drain first), then a new one with its ID starts.
	Mode    string `json:"mode"`
	Members int    `json:"members"`
	Syncs   int    `json:"syncs"`
	// Moves are syncs started on a member other than the one that ran
	// them last; Returns, syncs started again by the member that ran them
	// last (its new process).
	Moves       int       `json:"moves"`
	Returns     int       `json:"returns"`
	Rounds      float64   `json:"rounds"`        // Baton plan rounds written
	TookMS      float64   `json:"took_ms"`       // first member down → last one back, group balanced
	PerMemberMS []float64 `json:"per_member_ms"` // member down → group balanced with it again
	Cost        phaseCost `json:"cost"`
}

// rolling runs one rolling restart per mode, each on a fresh group.
func (b *bench) rolling(ctx context.Context, sys system) ([]rollingRun, error) {
	var out []rollingRun
	for _, mode := range []string{"restart", "leave"} {
		g, err := b.newGroup(ctx, sys, "rolling", b.cfg.Rolling.Syncs)
		if err != nil {
			return nil, err
		}
		r, err := b.rollingOnce(ctx, g, mode)
		g.close()
		if err != nil {
			return nil, fmt.Errorf("rolling %s %s: %w", sys.name(), mode, err)
		}
		b.logf("rolling %s %s: %d members restarted in %.0fms: %d moves, %d returns, %.0f plan rounds",
			sys.name(), mode, r.Members, r.TookMS, r.Moves, r.Returns, r.Rounds)
		out = append(out, r)
	}
	return out, nil
}

func (b *bench) rollingOnce(ctx context.Context, g *groupRun, mode string) (rollingRun, error) {
	sh := b.cfg.Rolling
	r := rollingRun{Mode: mode, Members: sh.Members, Syncs: sh.Syncs}
	ids := memberIDs("m", sh.Members)
	if err := g.join(ctx, ids...); err != nil {
		return r, err
	}
	if _, err := g.settle(ctx, b.cfg.Timeout); err != nil {
		return r, err
	}
	before := g.tr.owners()
	m := g.meter()
	t0 := recorder.Now()
	for _, id := range ids {
		start := recorder.Now()
		old := g.live[id]
		switch mode {
		case "restart":
			g.crash(old, start)
		case "leave":
			delete(g.active, id)
			lctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
			err := old.leave(lctx)
			cancel()
			if err != nil {
				return r, fmt.Errorf("%s leaves: %w", id, err)
			}
			delete(g.live, id)
		}
		// The new process starts at once; after a crash its Join waits
		// for the old session's lease.
		if err := g.join(ctx, id); err != nil {
			return r, fmt.Errorf("%s starts again: %w", id, err)
		}
		at, err := g.settle(ctx, b.cfg.Timeout)
		if err != nil {
			return r, fmt.Errorf("after %s restarted: %w", id, err)
		}
		r.PerMemberMS = append(r.PerMemberMS, ms(time.Duration(at-start)))
		r.TookMS = ms(time.Duration(at - t0))
	}
	r.Cost = m.cost()
	r.Rounds = r.Cost.Rebalances
	r.Moves, r.Returns = countMoves(g.tr.rec.Intervals(), before, t0)
	return r, nil
}

// countMoves reads the ownership intervals started from t0 on, in order
// per sync: a start on another member than the sync's last owner (before
// holds the owners at t0) is a move, one on the same member a return.
func countMoves(ivs []recorder.Interval, before map[string]string, t0 int64) (moves, returns int) {
	ivs = slices.Clone(ivs)
	slices.SortStableFunc(ivs, func(a, b recorder.Interval) int { return cmp.Compare(a.Start, b.Start) })
	last := maps.Clone(before)
	for _, iv := range ivs {
		if iv.Start < t0 {
			continue
		}
		if memberOf(last[iv.Sync]) == memberOf(iv.Member) {
			returns++
		} else {
			moves++
		}
		last[iv.Sync] = iv.Member
	}
	return moves, returns
}
