package rebalance

import (
	"cmp"
	"context"
	"math/bits"
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
//  2. places the other syncs, each on the eligible member furthest below
//     its share: syncs that fewer members may run before those that more
//     may run, and among syncs with the same eligible members the heaviest
//     first;
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
// Movement with unequal member weights: a join may also move a sync between
// two members that were there before. Rounding leaves some members below
// their share; when shares shrink for the joiner, such a member can have
// more room than the joiner, and the move to it is the better (or an
// equally good) one. For example, with members of weight 3 and 1 holding
// 2 and 0 of 2 syncs, a joiner of weight 1 gets nothing and one sync moves
// from the first member to the second. Every such move still reduces the
// sum of squared differences, as any Sticky move does.
//
// Cost: O(N log N + moves × log n) time and O(N + n) memory for N syncs on
// n members, plus work and memory in proportion to the candidates of each
// distinct set of constraints (a member with k binary labels that syncs
// require is a candidate of up to 2^k sets). Plain, 100,000 syncs on 1,000
// members take about 50–60 ms on a 2-core machine; with 9 such labels,
// about 0.2 s (BALANCERS.md).
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
	p, err := prepare(ctx, in)
	if err != nil {
		return nil, err
	}
	s, err := newStickyState(p, b.o)
	if err != nil {
		return nil, err
	}
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
	p      *problem
	owner  []int32 // per sync: member index, or -1
	dev    []int64 // per member: room left, scaled
	scale  []int64 // per member
	groups []stickyGroup
	spread *spreadState
	stack  []int32 // scratch for slotHeap.visitTop

	// touched lists, in order, the members whose room or holdings changed
	// since placement, once per change. A group's heaps are brought up to
	// date from it only when the group is next used (see heaps).
	touched []int32
	moves   int // moves made so far

	// With a move limit (Throttle), kept records each sync's valid current
	// owner (or -1), changed counts the kept syncs that are elsewhere now,
	// and limited is set once a move would exceed the limit: settling stops
	// there, and the leader's next round carries on from the new plan.
	limit   int // -1: none
	kept    []int32
	changed int
	limited bool
}

// stickyGroup is the state of one group of syncs; a slot is one candidate
// member's place in it.
type stickyGroup struct {
	members []int32   // slot -> member
	held    [][]int32 // slot -> the group's syncs on the member, sorted by (weight, index) after placement
	room    slotHeap  // every slot, most room (highest roomKey) first
	holders slotHeap  // slots holding a sync, lowest holderKey first
	// The heaps order slots by these copies of each slot's keys, not by the
	// live dev: several members change between two uses of a group, and a
	// heap can repair only one changed key at a time, so each key changes
	// just before its slot is fixed.
	roomKey   []int64 // slot -> dev of its member
	holderKey []int64 // slot -> holderKey, if it holds a sync
	// seen is how much of stickyState.touched the heaps reflect, or -1 if
	// they must be built from scratch. The heaps are in order only right
	// after stickyState.heaps.
	seen int
}

func newStickyState(p *problem, o stickyOptions) (*stickyState, error) {
	share, scale, err := p.scaledShares()
	if err != nil {
		return nil, err
	}
	s := &stickyState{
		p:      p,
		owner:  make([]int32, len(p.syncs)),
		dev:    share, // nothing is placed yet
		scale:  scale,
		groups: make([]stickyGroup, len(p.groups)),
	}
	for i := range s.owner {
		s.owner[i] = -1
	}
	// Each candidate of each group is a slot with a few fields; with many
	// groups per member there are many slots, so they are cut from one
	// allocation per field rather than allocated group by group.
	slots := 0
	for _, gr := range p.groups {
		slots += len(gr.members)
	}
	held := make([][]int32, slots)
	keys := make([]int64, 2*slots)
	ints := make([]int32, 4*slots)
	for g := range p.groups {
		members := p.groups[g].members
		n := len(members)
		sg := &s.groups[g]
		sg.members = members
		sg.held, held = held[:n:n], held[n:]
		sg.roomKey, sg.holderKey, keys = keys[:n:n], keys[n:2*n:2*n], keys[2*n:]
		sg.room = slotHeap{items: ints[:0:n], pos: ints[n : 2*n : 2*n], less: func(a, b int32) bool {
			da, db := sg.roomKey[a], sg.roomKey[b]
			return da > db || da == db && a < b
		}}
		sg.holders = slotHeap{items: ints[2*n : 2*n : 3*n], pos: ints[3*n : 4*n : 4*n], less: func(a, b int32) bool {
			ka, kb := sg.holderKey[a], sg.holderKey[b]
			return ka < kb || ka == kb && a < b
		}}
		ints = ints[4*n:]
		for slot := range members {
			sg.holders.pos[slot] = -1
		}
		sg.seen = -1
	}
	if o.spreadSync != "" {
		s.spread = newSpreadState(p, o)
	}
	return s, p.add(slots)
}

// poll counts a step of placing or moving (a few units of work) and
// reports the context's end.
func (s *stickyState) poll() error { return s.p.add(4) }

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

// place assigns every sync that has no member yet, each to the candidate
// with the most room. It goes group by group, the groups with the fewest
// candidates (by weight) first, as the fair shares are poured (see
// problem.fairShares): constrained syncs take their few members before
// syncs that may run anywhere fill in around them. Within a group the
// heaviest go first, so the light ones even out what the heavy ones leave.
//
// Going group by group is what keeps placement O(N log n) plus the size of
// the groups: only the group being placed needs its heap in order, so a
// placement fixes one heap, not one in every group its member belongs to
// (2^k of them for k binary labels), and each group's heap is built once,
// from the rooms its members have when its turn comes.
func (s *stickyState) place() error {
	orphans, start := s.orphansByGroup()
	for _, g := range s.p.fillOrder() {
		todo := orphans[start[g]:start[g+1]]
		if len(todo) == 0 {
			continue
		}
		if err := s.p.add(len(s.groups[g].members)); err != nil {
			return err
		}
		if err := s.placeGroup(g, todo); err != nil {
			return err
		}
	}
	s.sortHeld()
	return nil
}

// orphansByGroup returns the syncs that have no member yet but some
// candidate, bucketed by group (a counting sort, so O(N + groups)): group
// g's orphans are orphans[start[g]:start[g+1]], in ascending order.
func (s *stickyState) orphansByGroup() (orphans, start []int32) {
	start = make([]int32, len(s.groups)+1)
	for i, m := range s.owner {
		if g := s.p.syncGroup[i]; m < 0 && g >= 0 {
			start[g+1]++
		}
	}
	for g := range s.groups {
		start[g+1] += start[g]
	}
	orphans = make([]int32, start[len(s.groups)])
	next := slices.Clone(start[:len(s.groups)])
	for i, m := range s.owner {
		if g := s.p.syncGroup[i]; m < 0 && g >= 0 {
			orphans[next[g]] = int32(i)
			next[g]++
		}
	}
	return orphans, start
}

// placeGroup places todo, syncs of group g that have no member yet, the
// heaviest first, each on the candidate with the most room (with Spread,
// the one of those in the zone with the fewest of its tenant). It sorts
// todo in place and builds the group's room heap from the members' current
// rooms, which only this group's placements change while it runs.
func (s *stickyState) placeGroup(g int32, todo []int32) error {
	w := s.p.syncWeight
	slices.SortFunc(todo, func(a, b int32) int {
		if w[a] != w[b] {
			return cmp.Compare(w[b], w[a])
		}
		return cmp.Compare(a, b)
	})
	sg := &s.groups[g]
	sg.room.items = sg.room.items[:0]
	for slot, m := range sg.members {
		sg.room.items = append(sg.room.items, int32(slot))
		sg.roomKey[slot] = s.dev[m]
	}
	sg.room.init()
	for _, i := range todo {
		if err := s.poll(); err != nil {
			return err
		}
		slot, _ := sg.room.top()
		if s.spread != nil && s.spread.tenant[i] >= 0 {
			slot = s.spreadChoice(sg, i, slot)
		}
		s.add(i, g, slot)
		sg.roomKey[slot] = s.dev[sg.members[slot]]
		sg.room.fix(slot)
	}
	return nil
}

// sortHeld sorts each slot's syncs by (weight, index), as they are kept
// from placement on, so that the lightest (which decides whether any move
// helps) is first, and marks every group's heaps for a rebuild: other
// groups' placements changed its members' rooms.
func (s *stickyState) sortHeld() {
	w := s.p.syncWeight
	for g := range s.groups {
		sg := &s.groups[g]
		for _, held := range sg.held {
			slices.SortFunc(held, func(a, b int32) int {
				if w[a] != w[b] {
					return cmp.Compare(w[a], w[b])
				}
				return cmp.Compare(a, b)
			})
		}
		sg.seen = -1
	}
}

// heaps brings the heaps of group g up to date and returns the group.
//
// A move changes the room of two members, and a member is a candidate of
// many groups (2^k of them with k binary labels). Fixing all of them at
// every move made Sticky's cost grow with moves × groups per member, so
// instead a group catches up when it is next used: it fixes the slots of
// the members that changed since, or, when that would be more work than
// its size, rebuilds both heaps. A pass over all groups thus costs at most
// their total size, whatever the number of groups per member.
func (s *stickyState) heaps(g int32) *stickyGroup {
	sg := &s.groups[g]
	if sg.seen == len(s.touched) {
		return sg
	}
	n := len(sg.members)
	if tail := len(s.touched) - sg.seen; sg.seen < 0 || tail*bits.Len(uint(n)) > n {
		s.p.count(n) // the caller's next poll looks at the context if due
		sg.room.items = sg.room.items[:0]
		sg.holders.items = sg.holders.items[:0]
		for slot, held := range sg.held {
			s.setKeys(sg, int32(slot))
			sg.room.items = append(sg.room.items, int32(slot))
			sg.holders.pos[slot] = -1
			if len(held) > 0 {
				sg.holders.items = append(sg.holders.items, int32(slot))
			}
		}
		sg.room.init()
		sg.holders.init()
	} else {
		for _, m := range s.touched[sg.seen:] {
			if slot, ok := slices.BinarySearch(sg.members, m); ok {
				s.fix(sg, int32(slot))
			}
		}
	}
	sg.seen = len(s.touched)
	return sg
}

// setKeys copies slot's current keys into the group's heap keys: its
// member's room, and the room it would have after giving away its lightest
// sync of the group (a move from it is an improvement exactly when some
// candidate has more room than that).
func (s *stickyState) setKeys(sg *stickyGroup, slot int32) {
	m := sg.members[slot]
	sg.roomKey[slot] = s.dev[m]
	if held := sg.held[slot]; len(held) > 0 {
		sg.holderKey[slot] = s.dev[m] + s.scale[m]*s.p.syncWeight[held[0]]
	}
}

// fix restores heap order after the room or holdings of the member in slot
// changed.
func (s *stickyState) fix(sg *stickyGroup, slot int32) {
	s.setKeys(sg, slot)
	sg.room.fix(slot)
	has, in := len(sg.held[slot]) > 0, sg.holders.contains(slot)
	switch {
	case has && in:
		sg.holders.fix(slot)
	case has:
		sg.holders.push(slot)
	case in:
		sg.holders.remove(slot)
	}
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
			moved, err := s.balancePass()
			if err != nil || s.limited {
				return err
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

// balancePass makes improving moves in each group in turn until the group
// has none left, and reports whether it made any.
func (s *stickyState) balancePass() (bool, error) {
	moved := false
	for g := range s.groups {
		for s.balanceStep(int32(g)) {
			moved = true
			if err := s.poll(); err != nil {
				return false, err
			}
		}
		if err := s.p.add(1); err != nil {
			return false, err
		}
	}
	return moved, nil
}

// balanceStep makes one improving move within group g, if there is one: from
// the holder that would keep the least room after giving its lightest sync
// away, to the candidate with the most room. If that move does not improve,
// no move within the group does.
func (s *stickyState) balanceStep(g int32) bool {
	sg := s.heaps(g)
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
// slot to. It records both members as changed; the heaps of every group,
// this one included, are brought up to date by heaps when next used.
func (s *stickyState) move(i, g, from, to int32) {
	sg := &s.groups[g]
	mf, mt := sg.members[from], sg.members[to]
	w := s.p.syncWeight
	byWeight := func(a, b int32) int {
		if w[a] != w[b] {
			return cmp.Compare(w[a], w[b])
		}
		return cmp.Compare(a, b)
	}
	x, _ := slices.BinarySearchFunc(sg.held[from], i, byWeight)
	sg.held[from] = slices.Delete(sg.held[from], x, x+1)
	s.dev[mf] += s.scale[mf] * w[i]
	y, _ := slices.BinarySearchFunc(sg.held[to], i, byWeight)
	sg.held[to] = slices.Insert(sg.held[to], y, i)
	s.dev[mt] -= s.scale[mt] * w[i]
	s.owner[i] = mt
	s.touched = append(s.touched, mf, mt)
	s.moves++
	if s.spread != nil {
		s.spread.inc(i, mf, -1)
		s.spread.inc(i, mt, 1)
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
