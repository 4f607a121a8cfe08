package rebalance

import (
	"context"
	"slices"

	"github.com/baton-go/baton/assignment"
)

// Throttle returns a [Balancer] that runs b and then changes at most
// maxMoves syncs' owners relative to in.Current, leaving the rest of b's
// moves for later rounds: the leader rebalances again after the moves take
// effect, so a large rebalance is spread over several rounds instead of
// stopping many syncs at once. maxMoves below 1 is treated as 1, so that a
// misconfiguration slows rebalancing down instead of stopping it.
//
// Syncs that have no valid owner in Current (unassigned, or on a member
// that is gone, draining while others are not, or no longer eligible) are
// not throttled: they follow b's plan at once and do not count against
// maxMoves, because holding them back would leave work unowned and the plan
// invalid.
//
// For [Sticky], Throttle lets Sticky itself stop after maxMoves moves, made
// in its own order (the most overloaded member first); each of them
// improves balance on its own, so successive rounds always reach the plan
// Sticky would have made at once. (With [Spread], Sticky may swap two syncs
// between zones; a swap is never split, so with maxMoves = 1 a round may
// move two syncs.) For any other b, Throttle takes the
// changes b makes in sync ID order until maxMoves is reached and drops the
// rest, whose syncs stay with their current owners; rounds then converge if
// b's plan does not depend on Current (as with [RoundRobin] and
// [Rendezvous]) or if b copes with its plans being partly applied. Throttle
// is deterministic if b is, and ignores entries of b's plan for syncs that
// are not in the input.
//
// Stability, precisely: Throttle leaves every sync that has a valid owner
// in Current with that owner if and only if b would; if b would move any
// of them, Throttle moves at least one and at most maxMoves (with Spread,
// the first change of a round may be a swap of two syncs even when
// maxMoves is 1, see above). So given its
// own plan of the previous round as Current, Throttle returns it unchanged
// only once the rounds have settled on b's plan (for [Sticky], on a plan
// Sticky itself returns unchanged); before that every rerun moves more
// syncs. A leader that reruns it after each round therefore keeps moving
// syncs, at most maxMoves per round, until b's plan is reached, and only
// then do reruns stop moving anything.
func Throttle(b Balancer, maxMoves int) Balancer {
	maxMoves = max(maxMoves, 1)
	if lb, ok := b.(moveLimiter); ok {
		return BalancerFunc(func(ctx context.Context, in Input) (assignment.Plan, error) {
			return lb.balanceLimited(ctx, in, maxMoves)
		})
	}
	return BalancerFunc(func(ctx context.Context, in Input) (assignment.Plan, error) {
		next, err := b.Balance(ctx, in)
		if err != nil {
			return nil, err
		}
		p, err := prepare(ctx, in)
		if err != nil {
			return nil, err
		}
		out := make(assignment.Plan, len(next))
		moves := 0
		for i, s := range p.syncs {
			to, planned := next[s.ID]
			from, valid := validOwner(p, in.Current, int32(i))
			switch {
			case !valid: // must move now
				if planned {
					out[s.ID] = to
				}
			case planned && to == from: // b keeps it
				out[s.ID] = from
			case moves < maxMoves:
				moves++
				if planned {
					out[s.ID] = to
				}
			default:
				out[s.ID] = from
			}
		}
		return out, nil
	})
}

// moveLimiter is implemented by balancers that can stop by themselves after
// a number of moves, choosing which moves to make first. Sticky does: each of
// its moves improves balance on its own, so rounds of a throttled Sticky
// always converge, which taking some of its planned moves in ID order would
// not guarantee (a sync moved to make room for another could move back in
// the next round).
type moveLimiter interface {
	balanceLimited(ctx context.Context, in Input, maxMoves int) (assignment.Plan, error)
}

// validOwner returns sync i's current owner if the sync may stay there.
func validOwner(p *problem, current assignment.Plan, i int32) (string, bool) {
	g := p.syncGroup[i]
	if g < 0 {
		return "", false
	}
	id, ok := current[p.syncs[i].ID]
	if !ok {
		return "", false
	}
	m, ok := p.memberIndex[id]
	if !ok {
		return "", false
	}
	_, ok = slices.BinarySearch(p.groups[g].members, m)
	return id, ok
}
