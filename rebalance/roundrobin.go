package rebalance

import (
	"context"
	"math/bits"

	"github.com/baton-go/baton/assignment"
)

// RoundRobin returns a [Balancer] that deals the syncs out in ID order, each
// to the eligible member with the least load per unit of weight so far (the
// first by ID on a tie). With equal weights and no constraints that is
// classic round robin: the i-th sync goes to the (i mod n)-th member.
// Without constraints, each member's load stays below its weighted share
// plus the heaviest sync's weight, whatever the weights. It is safe for
// concurrent use.
//
// RoundRobin ignores Current, so a member joining or leaving can move most
// syncs. It suits small groups whose syncs are cheap to restart, and serves
// as a baseline; [Sticky] is the better default.
func RoundRobin() Balancer {
	return BalancerFunc(func(ctx context.Context, in Input) (assignment.Plan, error) {
		if ctx.Err() != nil {
			return nil, stopped(ctx)
		}
		p, err := prepare(ctx, in)
		if err != nil {
			return nil, err
		}
		load := make([]int64, len(p.members))
		heaps := make([]slotHeap, len(p.groups))
		slots := make([][]slotRef, len(p.members))
		for g := range p.groups {
			members := p.groups[g].members
			if err := p.add(len(members)); err != nil {
				return nil, err
			}
			h := &heaps[g]
			h.pos = make([]int32, len(members))
			h.items = make([]int32, len(members))
			// Least load per unit of weight first, compared exactly as
			// load[a] × weight[b] < load[b] × weight[a].
			h.less = func(a, b int32) bool {
				ma, mb := members[a], members[b]
				ha, la := bits.Mul64(uint64(load[ma]), uint64(p.memberWeight[mb]))
				hb, lb := bits.Mul64(uint64(load[mb]), uint64(p.memberWeight[ma]))
				if ha != hb || la != lb {
					return ha < hb || ha == hb && la < lb
				}
				return a < b
			}
			for slot, m := range members {
				h.items[slot] = int32(slot)
				slots[m] = append(slots[m], slotRef{int32(g), int32(slot)})
			}
			h.init()
		}
		plan := make(assignment.Plan, len(p.syncs))
		for i, s := range p.syncs {
			if err := p.add(1); err != nil {
				return nil, err
			}
			g := p.syncGroup[i]
			if g < 0 {
				continue
			}
			slot, _ := heaps[g].top()
			m := p.groups[g].members[slot]
			plan[s.ID] = p.members[m].ID
			load[m] += p.syncWeight[i]
			for _, ref := range slots[m] {
				heaps[ref.group].fix(ref.slot)
			}
			p.count(len(slots[m]))
		}
		return plan, nil
	})
}

// slotRef is a member's place (slot) in the heap of one of its groups.
type slotRef struct{ group, slot int32 }
