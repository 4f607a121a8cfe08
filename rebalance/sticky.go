package rebalance

import (
	"context"
	"slices"
	"sort"

	"github.com/baton-go/baton/assignment"
)

// StickyOption configures [Sticky].
type StickyOption func(*stickyOptions)

type stickyOptions struct {
	spreadSync   string // sync label whose values are spread; "" for none
	spreadMember string // member label whose values are the places to spread over
}

func defaultStickyOptions() stickyOptions { return stickyOptions{} }

// Spread asks [Sticky] to spread the syncs that share a value of the sync
// label syncLabel (say "tenant") across the distinct values of the member
// label memberLabel (say "zone") as evenly as possible, so that losing one
// zone stops as little of any one tenant as possible. Members without
// memberLabel count as one more zone (the empty value); syncs without
// syncLabel are not spread.
//
// Spreading is a secondary goal: it never worsens balance. Sticky spreads
// by its choice of member when it places or moves a sync anyway, and by
// moves that leave every member's load exactly as balanced as before (a sync
// handed to an equally loaded member of another zone, or two syncs of equal
// weight swapped between zones); each such move makes the spread strictly
// more even. Those extra moves are the price of spreading: without Spread,
// Sticky moves only what balance requires. The search for such moves is
// bounded per tenant, so a spread that could only be improved by long chains
// of moves may be left as it is.
//
// Only one Spread takes effect; a later option replaces an earlier one. An
// empty syncLabel or memberLabel turns spreading off.
func Spread(syncLabel, memberLabel string) StickyOption {
	return func(o *stickyOptions) {
		o.spreadSync, o.spreadMember = syncLabel, memberLabel
		if syncLabel == "" || memberLabel == "" {
			o.spreadSync, o.spreadMember = "", ""
		}
	}
}

// Sticky returns the default [Balancer]: weighted balance with the fewest
// moves. It is safe for concurrent use.
//
// Each member's fair share of the load is its weight (capacity) times the
// total sync weight (cost), divided by the total member weight; syncs with
// constraints claim their eligible members first and the rest is spread
// around them. Sticky then:
//
//  1. keeps every sync on its current member if that member is live,
//     eligible and not draining (or draining, when every eligible member is);
//  2. places the other syncs, heaviest first, each on the eligible member
//     furthest below its share;
//  3. moves syncs only while a move strictly reduces the sum of squared
//     differences between loads and shares: a sync moves from member A to
//     member B only if B has more room left than A would have after giving
//     the sync away. Each move goes from the member with the least room to
//     the one with the most, so the worst imbalance is fixed first.
//
// # Guarantees
//
// Deterministic and stable: the plan depends only on the set of members,
// syncs and current owners, and given its own plan as Current, Sticky
// returns it unchanged.
//
// Balance: when every sync may run on every non-draining member (no
// require: labels), each non-draining member's load differs from its share
// by less than the heaviest sync's weight. With equal weights every member
// holds ⌊N/n⌋ or ⌈N/n⌉ of N syncs on n members.
//
// Movement, with equal weights and no constraints: when a member joins it
// takes ⌊N/(n+1)⌋ or ⌈N/(n+1)⌉ syncs and no other sync moves; when a
// member leaves (or starts draining) only its syncs move, spread over the
// others; when weights change, each member either only gains or only loses
// syncs. With unequal sync weights a join or leave may take a few more
// moves, each of which improves balance.
//
// Constraints and draining are kept exactly as [Validate] checks them. With
// constraints the balance bound is best effort: syncs that only a few
// members may run can leave those members above their share.
//
// Cost: O(N log N + moves × log n) time and O(N + n) memory for N syncs on
// n members, plus the work per distinct set of constraints; about 50 ms for
// 100,000 syncs on 1,000 members on a 2-core machine (BALANCERS.md).
func Sticky(opts ...StickyOption) Balancer {
	o := defaultStickyOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &stickyBalancer{o: o}
}

type stickyBalancer struct{ o stickyOptions }

// Balance implements [Balancer].
func (b *stickyBalancer) Balance(ctx context.Context, in Input) (assignment.Plan, error) {
	return b.balance(ctx, in, -1)
}

// balanceLimited is Balance making at most maxMoves moves of syncs that may
// stay where they are; see Throttle.
func (b *stickyBalancer) balanceLimited(ctx context.Context, in Input, maxMoves int) (assignment.Plan, error) {
	return b.balance(ctx, in, maxMoves)
}

func (b *stickyBalancer) balance(ctx context.Context, in Input, maxMoves int) (assignment.Plan, error) {
	if err := ctx.Err(); err != nil {
		return nil, stopped(ctx)
	}
	p, err := newProblem(in)
	if err != nil {
		return nil, err
	}
	s := newStickyState(ctx, p, b.o)
	s.keep(in.Current, maxMoves)
	if err := s.place(); err != nil {
		return nil, err
	}
	if err := s.settle(); err != nil {
		return nil, err
	}
	return s.plan(), nil
}

// stickyState is one run of Sticky.
//
// Loads are kept as dev = scale × share − scale × load per member: the room
// a member has left, negative when it is over its share, in units small
// enough that shares are exact integers (see problem.scaledShares). Moving a
// sync of weight w from member a to member b changes the sum of dev² by
// 2·scale·w·(dev[a] − dev[b] + scale·w), so the move is an improvement
// exactly when dev[b] > dev[a] + scale·w. Every balancing move improves and
// every spreading move leaves the sum unchanged while making the spread more
// even, so the moves cannot cycle and a finished plan admits none: that is
// why Sticky returns its own plan unchanged.
type stickyState struct {
	ctx         context.Context
	polls       int
	p           *problem
	owner       []int32 // per sync: member index, or -1
	dev         []int64 // per member: room left, scaled
	scale       []int64 // per member
	groups      []stickyGroup
	memberSlots [][]slotRef // per member: its slot in each group it is a candidate of, ascending by group
	spread      *spreadState
	stack       []int32 // scratch for slotHeap.visitTop

	// With a move limit (Throttle), kept records each sync's valid current
	// owner (or -1), changed counts the kept syncs that are elsewhere now,
	// and limited is set once a move would exceed the limit: settling stops
	// there, and the leader's next round carries on from the new plan.
	limit   int // -1: none
	kept    []int32
	changed int
	limited bool
}

type slotRef struct{ group, slot int32 }

// stickyGroup is the state of one group of syncs; a slot is one candidate
// member's place in it.
type stickyGroup struct {
	members []int32   // slot -> member
	held    [][]int32 // slot -> the group's syncs on the member, sorted by (weight, index) after placement
	room    slotHeap  // every slot, most room (highest dev) first
	holders slotHeap  // slots holding a sync, lowest dev + scale × lightest held weight first
}

func newStickyState(ctx context.Context, p *problem, o stickyOptions) *stickyState {
	share, scale := p.scaledShares()
	s := &stickyState{
		ctx:         ctx,
		p:           p,
		owner:       make([]int32, len(p.syncs)),
		dev:         share, // nothing is placed yet
		scale:       scale,
		groups:      make([]stickyGroup, len(p.groups)),
		memberSlots: make([][]slotRef, len(p.members)),
	}
	for i := range s.owner {
		s.owner[i] = -1
	}
	for g := range p.groups {
		members := p.groups[g].members
		sg := &s.groups[g]
		sg.members = members
		sg.held = make([][]int32, len(members))
		sg.room = slotHeap{pos: make([]int32, len(members)), less: func(a, b int32) bool {
			da, db := s.dev[members[a]], s.dev[members[b]]
			return da > db || da == db && a < b
		}}
		sg.holders = slotHeap{pos: make([]int32, len(members)), less: func(a, b int32) bool {
			ka, kb := s.holderKey(sg, a), s.holderKey(sg, b)
			return ka < kb || ka == kb && a < b
		}}
		for slot, m := range members {
			s.memberSlots[m] = append(s.memberSlots[m], slotRef{int32(g), int32(slot)})
			sg.holders.pos[slot] = -1
		}
	}
	if o.spreadSync != "" {
		s.spread = newSpreadState(p, o)
	}
	return s
}

// poll reports the context's end, looking at it only every so often
// because the loops that call it are tight.
func (s *stickyState) poll() error {
	s.polls++
	if s.polls&1023 == 0 && s.ctx.Err() != nil {
		return stopped(s.ctx)
	}
	return nil
}

// holderKey is the room slot's member would have after giving away its
// lightest sync of the group: a move from it is an improvement exactly when
// some candidate has more room than that.
func (s *stickyState) holderKey(sg *stickyGroup, slot int32) int64 {
	m := sg.members[slot]
	return s.dev[m] + s.scale[m]*s.p.syncWeight[sg.held[slot][0]]
}

// keep puts every sync on its current member where that is allowed, and
// sets the move limit (-1 for none).
func (s *stickyState) keep(current assignment.Plan, limit int) {
	s.limit = limit
	if limit >= 0 {
		defer func() { s.kept = slices.Clone(s.owner) }()
	}
	if len(current) == 0 {
		return
	}
	for i := range s.p.syncs {
		g := s.p.syncGroup[i]
		if g < 0 {
			continue
		}
		mid, ok := current[s.p.syncs[i].ID]
		if !ok {
			continue
		}
		m, ok := s.p.memberIndex[mid]
		if !ok {
			continue
		}
		slot, ok := slices.BinarySearch(s.p.groups[g].members, m)
		if !ok {
			continue // not a candidate: ineligible, or draining while others are not
		}
		s.add(int32(i), g, int32(slot))
	}
}

// add gives sync i to the member in slot of group g, without touching the
// heaps.
func (s *stickyState) add(i, g, slot int32) {
	sg := &s.groups[g]
	m := sg.members[slot]
	s.owner[i] = m
	sg.held[slot] = append(sg.held[slot], i)
	s.dev[m] -= s.scale[m] * s.p.syncWeight[i]
	if s.spread != nil {
		s.spread.inc(i, m, 1)
	}
}

// place assigns every sync that has no member yet, heaviest first (so the
// light ones even out what the heavy ones leave), each to the candidate
// with the most room.
func (s *stickyState) place() error {
	for g := range s.groups {
		sg := &s.groups[g]
		sg.room.items = make([]int32, len(sg.members))
		for slot := range sg.room.items {
			sg.room.items[slot] = int32(slot)
		}
		sg.room.init()
	}
	var orphans []int32
	for i, m := range s.owner {
		if m < 0 && s.p.syncGroup[i] >= 0 {
			orphans = append(orphans, int32(i))
		}
	}
	w := s.p.syncWeight
	slices.SortFunc(orphans, func(a, b int32) int {
		if w[a] != w[b] {
			return int(w[b] - w[a]) // heaviest first; weights are capped, so no overflow
		}
		return int(a - b)
	})
	for _, i := range orphans {
		if err := s.poll(); err != nil {
			return err
		}
		g := s.p.syncGroup[i]
		sg := &s.groups[g]
		slot, _ := sg.room.top()
		if s.spread != nil && s.spread.tenant[i] >= 0 {
			slot = s.spreadChoice(sg, i, slot)
		}
		s.add(i, g, slot)
		m := sg.members[slot]
		for _, ref := range s.memberSlots[m] {
			s.groups[ref.group].room.fix(ref.slot)
		}
	}
	// From here on each member's syncs are kept sorted by weight, so the
	// lightest (which decides whether any move helps) is first.
	for g := range s.groups {
		sg := &s.groups[g]
		for slot, held := range sg.held {
			if len(held) == 0 {
				continue
			}
			slices.SortFunc(held, func(a, b int32) int {
				if w[a] != w[b] {
					return int(w[a] - w[b])
				}
				return int(a - b)
			})
			sg.holders.items = append(sg.holders.items, int32(slot))
		}
		sg.holders.init()
	}
	return nil
}

// spreadChoice picks, among the candidates with as much room as the best
// one, the one in the zone holding the fewest syncs of sync i's tenant.
func (s *stickyState) spreadChoice(sg *stickyGroup, i, best int32) int32 {
	top := s.dev[sg.members[best]]
	bestCount := s.spread.countIn(i, sg.members[best])
	s.stack = sg.room.visitTop(spreadSearch, s.stack,
		func(slot int32) bool { return s.dev[sg.members[slot]] == top },
		func(slot int32) {
			if c := s.spread.countIn(i, sg.members[slot]); c < bestCount || c == bestCount && slot < best {
				best, bestCount = slot, c
			}
		})
	return best
}

// settle makes improving moves until none is left, then (with Spread)
// balance-neutral spreading moves, and repeats until neither finds a move.
func (s *stickyState) settle() error {
	for {
		for {
			moved := false
			for g := range s.groups {
				for s.balanceStep(int32(g)) {
					moved = true
					if err := s.poll(); err != nil {
						return err
					}
				}
			}
			if s.limited {
				return nil
			}
			if !moved {
				break
			}
		}
		if s.spread == nil {
			return nil
		}
		moved, err := s.spreadPass()
		if err != nil || !moved || s.limited {
			return err
		}
	}
}

// balanceStep makes one improving move within group g, if there is one: from
// the holder that would keep the least room after giving its lightest sync
// away, to the candidate with the most room. If that move does not improve,
// no move within the group does.
func (s *stickyState) balanceStep(g int32) bool {
	sg := &s.groups[g]
	from, ok := sg.holders.top()
	if !ok {
		return false
	}
	to, _ := sg.room.top()
	if to == from {
		return false // the holder with least room has the most: all are equal
	}
	mf := sg.members[from]
	k := s.scale[mf]
	gap := s.dev[sg.members[to]] - s.dev[mf]
	held := sg.held[from]
	w := s.p.syncWeight
	if gap <= k*w[held[0]] {
		return false
	}
	// Move the heaviest sync that does not overshoot (after the move the
	// receiver still has at least as much room as the giver), which closes
	// the gap in the fewest moves; if every sync overshoots, the lightest,
	// which still improves.
	n := sort.Search(len(held), func(x int) bool { return 2*k*w[held[x]] > gap })
	pick := max(n-1, 0)
	if s.spread != nil {
		pick, to = s.spreadMove(sg, from, pick, to)
	}
	if !s.allow(step{held[pick], sg.members[to]}) {
		return false
	}
	s.move(held[pick], g, from, to)
	return true
}

// step is a sync and the member it would move to.
type step struct{ sync, to int32 }

// allow reports whether the move limit admits the steps, taken in order. If
// it does not, allow records that the limit is reached, which ends settling.
func (s *stickyState) allow(steps ...step) bool {
	if s.limited {
		return false
	}
	if s.limit < 0 {
		return true
	}
	changed := s.changed
	for _, st := range steps {
		if k := s.kept[st.sync]; k >= 0 {
			if s.owner[st.sync] != k {
				changed--
			}
			if st.to != k {
				changed++
			}
		}
	}
	// The first change of a round always goes ahead, even a swap of two
	// syncs with a limit of 1: splitting a swap would leave a plan Sticky
	// undoes, and refusing it would stall the rounds short of Sticky's plan.
	if changed > s.limit && s.changed > 0 {
		s.limited = true
		return false
	}
	s.changed = changed
	return true
}

// move hands sync i of group g from the member in slot from to the member in
// slot to, keeping the heaps in order.
func (s *stickyState) move(i, g, from, to int32) {
	sg := &s.groups[g]
	mf, mt := sg.members[from], sg.members[to]
	w := s.p.syncWeight
	cmp := func(a, b int32) int {
		if w[a] != w[b] {
			return int(w[a] - w[b])
		}
		return int(a - b)
	}
	// Change one member at a time and restore heap order after each: a heap
	// can only repair one changed key per sift.
	x, _ := slices.BinarySearchFunc(sg.held[from], i, cmp)
	sg.held[from] = slices.Delete(sg.held[from], x, x+1)
	s.dev[mf] += s.scale[mf] * w[i]
	s.refresh(mf)
	y, _ := slices.BinarySearchFunc(sg.held[to], i, cmp)
	sg.held[to] = slices.Insert(sg.held[to], y, i)
	s.dev[mt] -= s.scale[mt] * w[i]
	s.refresh(mt)
	s.owner[i] = mt
	if s.spread != nil {
		s.spread.inc(i, mf, -1)
		s.spread.inc(i, mt, 1)
	}
}

// refresh restores heap order after member m's room or holdings changed.
func (s *stickyState) refresh(m int32) {
	for _, ref := range s.memberSlots[m] {
		sg := &s.groups[ref.group]
		sg.room.fix(ref.slot)
		has, in := len(sg.held[ref.slot]) > 0, sg.holders.contains(ref.slot)
		switch {
		case has && in:
			sg.holders.fix(ref.slot)
		case has:
			sg.holders.push(ref.slot)
		case in:
			sg.holders.remove(ref.slot)
		}
	}
}

func (s *stickyState) plan() assignment.Plan {
	n := 0
	for _, m := range s.owner {
		if m >= 0 {
			n++
		}
	}
	plan := make(assignment.Plan, n)
	for i, m := range s.owner {
		if m >= 0 {
			plan[s.p.syncs[i].ID] = s.p.members[m].ID
		}
	}
	return plan
}
