package rebalance

import (
	"cmp"
	"slices"
)

const (
	// spreadSearch bounds how many equally good members or syncs Sticky
	// compares when it picks one with Spread in mind.
	spreadSearch = 32
	// spreadBudget bounds how many candidate swaps per search for a
	// balance-neutral spreading move may fail on constraints (the partner
	// may not run where the sync is, or the other way round). The bound
	// keeps a search short when constraints pin tenants to zones; because
	// the search is a deterministic function of the plan, Sticky stays
	// stable.
	spreadBudget = 512
)

// spreadState counts, for Sticky's Spread option, how many syncs of each
// tenant (value of the sync label) run in each zone (value of the member
// label).
type spreadState struct {
	zone        []int32 // per member
	zones       int
	tenant      []int32   // per sync, -1 without the sync label
	tenantSyncs [][]int32 // per tenant, ascending
	dense       []int32   // tenant × zone -> count, when that table is small
	sparse      map[int64]int32
	seen        []uint32 // per zone: stamp of the last tenant seen there
	stamp       uint32

	// buckets lists, per tenant (or no tenant) and zone, the syncs there by
	// (weight, index); built when spreading first looks for swaps, then kept
	// up to date by inc.
	buckets     [][]int32         // by key, when tenants × zones is small
	bucketMap   map[int64][]int32 // by key, otherwise
	haveBuckets bool
	weight      []int64 // per sync
	scratch     []int32
	order       []int32
	// tried lists per member the (group, weight) of the syncs spreadTenant
	// has looked for a single move for, while triedStamp is its stamp.
	tried      [][]groupWeight
	triedStamp []uint32

	// cleanTenant is the tenant whose last spreadTenant call found no
	// member with exactly the room a single move of its syncs needs, when
	// stickyState.moves was cleanMoves; swapped lists the tenant's syncs
	// that call's swaps moved, and recheck is scratch.
	cleanTenant      int32
	cleanMoves       int
	swapped, recheck []int32
}

type groupWeight struct {
	group  int32
	weight int64
}

// triedBefore reports whether a single move was looked for, under the
// current stamp, for a sync of group g and weight w on member m, and
// records that it now has been.
func (sp *spreadState) triedBefore(m, g int32, w int64) bool {
	if sp.triedStamp[m] != sp.stamp {
		sp.triedStamp[m] = sp.stamp
		sp.tried[m] = sp.tried[m][:0]
	}
	k := groupWeight{g, w}
	if slices.Contains(sp.tried[m], k) {
		return true
	}
	sp.tried[m] = append(sp.tried[m], k)
	return false
}

// extremes returns the most and fewest syncs tenant t has in a zone,
// looking at the zones or at t's syncs, whichever are fewer.
func (sp *spreadState) extremes(s *stickyState, t int32) (hi, lo int32) {
	syncs := sp.tenantSyncs[t]
	hi, lo = 0, 1<<30
	if sp.zones <= len(syncs) {
		for z := range int32(sp.zones) {
			c := sp.get(t, z)
			hi, lo = max(hi, c), min(lo, c)
		}
		return hi, lo
	}
	sp.stamp++
	distinct := 0
	for _, i := range syncs {
		m := s.owner[i]
		if m < 0 {
			continue
		}
		if z := sp.zone[m]; sp.seen[z] != sp.stamp {
			sp.seen[z] = sp.stamp
			distinct++
			c := sp.get(t, z)
			hi, lo = max(hi, c), min(lo, c)
		}
	}
	if distinct < sp.zones {
		lo = 0 // some zone has none of this tenant
	}
	return hi, lo
}

// key is the buckets key of tenant t (-1: no tenant) in zone z.
func (sp *spreadState) key(t, z int32) int64 { return (int64(t)+1)*int64(sp.zones) + int64(z) }

func (sp *spreadState) bucket(k int64) []int32 {
	if sp.buckets != nil {
		return sp.buckets[k]
	}
	return sp.bucketMap[k]
}

func (sp *spreadState) setBucket(k int64, b []int32) {
	if sp.buckets != nil {
		sp.buckets[k] = b
	} else {
		sp.bucketMap[k] = b
	}
}

// buildBuckets fills the buckets from the plan. Each bucket is sorted by
// (weight, index) as plain integers, weight << 32 | index, which is much
// cheaper than sorting with a comparison function.
func (sp *spreadState) buildBuckets(s *stickyState) {
	if sp.haveBuckets {
		return
	}
	sp.haveBuckets = true
	sp.weight = s.p.syncWeight
	keys := (len(sp.tenantSyncs) + 1) * sp.zones
	var packed [][]uint64
	if keys <= max(1<<16, 4*len(s.owner)) {
		sp.buckets = make([][]int32, keys)
		packed = make([][]uint64, keys)
	} else {
		sp.bucketMap = map[int64][]int32{}
	}
	byKey := map[int64][]uint64{}
	for i, m := range s.owner {
		if m < 0 {
			continue
		}
		k := sp.key(sp.tenant[i], sp.zone[m])
		x := uint64(sp.weight[i])<<32 | uint64(i) // weights are below 2²⁴
		if packed != nil {
			packed[k] = append(packed[k], x)
		} else {
			byKey[k] = append(byKey[k], x)
		}
	}
	unpack := func(k int64, xs []uint64) {
		slices.Sort(xs)
		b := make([]int32, len(xs))
		for n, x := range xs {
			b[n] = int32(uint32(x))
		}
		sp.setBucket(k, b)
	}
	for k, xs := range packed {
		if len(xs) > 0 {
			unpack(int64(k), xs)
		}
	}
	for k, xs := range byKey {
		unpack(k, xs)
	}
	s.p.count(len(s.owner))
}

func (sp *spreadState) byWeight(a, b int32) int {
	if c := cmp.Compare(sp.weight[a], sp.weight[b]); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

func newSpreadState(p *problem, o stickyOptions) *spreadState {
	sp := &spreadState{
		zone:        make([]int32, len(p.members)),
		tenant:      make([]int32, len(p.syncs)),
		tried:       make([][]groupWeight, len(p.members)),
		triedStamp:  make([]uint32, len(p.members)),
		cleanTenant: -1,
	}
	zoneNames := make([]string, len(p.members))
	for m, mem := range p.members {
		zoneNames[m] = mem.Labels[o.spreadMember] // "" if absent: one more zone
	}
	zones := slices.Compact(slices.Sorted(slices.Values(zoneNames)))
	for m, z := range zoneNames {
		i, _ := slices.BinarySearch(zones, z)
		sp.zone[m] = int32(i)
	}
	sp.zones = len(zones)
	sp.seen = make([]uint32, sp.zones)

	// Tenants are numbered in order of first appearance; syncs are sorted
	// by ID, so the numbering depends only on the input's content.
	index := map[string]int32{}
	for i, s := range p.syncs {
		v, ok := s.Labels[o.spreadSync]
		if !ok {
			sp.tenant[i] = -1
			continue
		}
		t, ok := index[v]
		if !ok {
			t = int32(len(sp.tenantSyncs))
			index[v] = t
			sp.tenantSyncs = append(sp.tenantSyncs, nil)
		}
		sp.tenant[i] = t
		sp.tenantSyncs[t] = append(sp.tenantSyncs[t], int32(i))
	}
	if cells := len(sp.tenantSyncs) * sp.zones; cells <= max(1<<16, 4*len(p.syncs)) {
		sp.dense = make([]int32, cells)
	} else {
		sp.sparse = map[int64]int32{}
	}
	return sp
}

// get returns how many syncs of tenant t run in zone z.
func (sp *spreadState) get(t, z int32) int32 {
	k := int64(t)*int64(sp.zones) + int64(z)
	if sp.dense != nil {
		return sp.dense[k]
	}
	return sp.sparse[k]
}

// inc adds d (1 or -1) to the count of sync i's tenant in member m's zone,
// and adds i to that zone's bucket or removes it.
func (sp *spreadState) inc(i, m int32, d int32) {
	if sp.haveBuckets {
		k := sp.key(sp.tenant[i], sp.zone[m])
		b := sp.bucket(k)
		x, _ := slices.BinarySearchFunc(b, i, sp.byWeight)
		if d > 0 {
			sp.setBucket(k, slices.Insert(b, x, i))
		} else {
			sp.setBucket(k, slices.Delete(b, x, x+1))
		}
	}
	if t := sp.tenant[i]; t >= 0 {
		k := int64(t)*int64(sp.zones) + int64(sp.zone[m])
		if sp.dense != nil {
			sp.dense[k] += d
		} else {
			sp.sparse[k] += d
		}
	}
}

// countIn returns how many syncs of sync i's tenant run in member m's zone.
func (sp *spreadState) countIn(i, m int32) int32 {
	if t := sp.tenant[i]; t >= 0 {
		return sp.get(t, sp.zone[m])
	}
	return 0
}

// spreadMove chooses, for a balancing move out of slot from, which sync of
// the chosen weight to move and to which improving candidate: the pair that
// takes a tenant out of the zone where it is most crowded into the one where
// it is least. pick indexes the sync Sticky would move without Spread, to
// the slot to.
func (s *stickyState) spreadMove(sg *stickyGroup, from int32, pick int, to int32) (int, int32) {
	held := sg.held[from]
	mf := sg.members[from]
	w := s.p.syncWeight[held[pick]]
	floor := s.dev[mf] + s.scale[mf]*w // a target must have more room than this
	var targets [spreadSearch]int32
	n := 0
	s.stack = sg.room.visitTop(spreadSearch, s.stack,
		func(slot int32) bool { return s.dev[sg.members[slot]] > floor },
		func(slot int32) {
			if slot != from {
				targets[n] = slot
				n++
			}
		})
	// Best first: highest score, then most room, then lowest slot, then the
	// sync found first.
	bestScore, bestPick, bestTo := int32(-1<<30), pick, to
	for x := pick; x >= 0 && x > pick-spreadSearch && s.p.syncWeight[held[x]] == w; x-- {
		i := held[x]
		here := s.spread.countIn(i, mf)
		for _, slot := range targets[:n] {
			score := here - s.spread.countIn(i, sg.members[slot])
			d, bd := s.dev[sg.members[slot]], s.dev[sg.members[bestTo]]
			if score > bestScore || score == bestScore && (d > bd || d == bd && slot < bestTo) {
				bestScore, bestPick, bestTo = score, x, slot
			}
		}
	}
	return bestPick, bestTo
}

// spreadPass tries each tenant in turn for balance-neutral moves that make
// its spread more even, and reports whether it made any.
func (s *stickyState) spreadPass() (bool, error) {
	moved := false
	for t := range s.spread.tenantSyncs {
		for s.spreadTenant(int32(t)) {
			moved = true
			// Each search goes through the tenant's syncs.
			if err := s.p.add(len(s.spread.tenantSyncs[t])); err != nil {
				return false, err
			}
		}
		// A search that finds nothing looks at up to spreadBudget syncs.
		if err := s.p.add(len(s.spread.tenantSyncs[t]) + spreadBudget); err != nil {
			return false, err
		}
		if s.limited {
			break
		}
	}
	return moved, nil
}

// spreadTenant makes moves that lower the sum over zones of the squared
// count of tenant t's syncs without changing the sum of dev², and reports
// whether it made any: a single move to a member with exactly the room the
// sync leaves behind, else swaps with equally heavy syncs (of no tenant, or
// of one the swap does not crowd more than it helps t); see spreadSwaps.
func (s *stickyState) spreadTenant(t int32) bool {
	sp := s.spread
	hi, lo := sp.extremes(s, t)
	if hi-lo < 2 {
		return false
	}
	candidates := sp.singleMoveCandidates(t, s.moves)
	w := s.p.syncWeight
	// Whether a single move exists depends on the sync's member, weight and
	// group only, and a tenant's syncs share few of those: look once each.
	sp.stamp++
	exact := false // some member has exactly the room a single move needs
	for _, i := range candidates {
		j := s.owner[i]
		if j < 0 || sp.triedBefore(j, s.p.syncGroup[i], w[i]) {
			continue
		}
		target, found := s.exactRoomSlot(t, i, lo)
		exact = exact || found
		if target >= 0 {
			g := s.p.syncGroup[i]
			sg := &s.groups[g]
			if !s.allow(step{i, sg.members[target]}) {
				return false
			}
			x, _ := slices.BinarySearch(sg.members, j)
			s.move(i, g, int32(x), target)
			return true
		}
	}
	moved := s.spreadSwaps(t)
	if !exact {
		sp.cleanTenant, sp.cleanMoves = t, s.moves
	}
	return moved
}

// singleMoveCandidates returns the syncs of tenant t that spreadTenant
// looks at for a single move, with moves the stickyState's count of moves
// so far: all of t's syncs or, when the last call for t found no member with
// exactly the room a single move needs and nothing has moved since but its
// own swaps (which change no member's room), only the syncs those swaps
// moved, as no other sync can have gained a single move. (Going through all
// of a tenant's syncs at every call made spreading cost swaps × syncs per
// tenant.) It also empties swapped for this call's swaps and forgets
// cleanTenant; the slice it returns stays valid until the next call.
func (sp *spreadState) singleMoveCandidates(t int32, moves int) []int32 {
	candidates := sp.tenantSyncs[t]
	if sp.cleanTenant == t && sp.cleanMoves == moves {
		sp.recheck, sp.swapped = sp.swapped, sp.recheck
		candidates = sp.recheck
	}
	sp.swapped = sp.swapped[:0]
	sp.cleanTenant = -1
	return candidates
}

// exactRoomSlot looks for a single spreading move of sync i of tenant t,
// where lo is the fewest syncs t has in a zone: among the candidates of i's
// group with the most room (at most spreadSearch of them), the lowest slot
// whose member has exactly the room i leaves behind and is in a zone where
// the move makes t's spread strictly more even. It returns that slot, or -1,
// and whether a single move of some sync with i's member, weight and group
// may exist: some candidate has exactly that room, or the search was cut
// short. It brings the group's heaps up to date.
func (s *stickyState) exactRoomSlot(t, i, lo int32) (target int32, exact bool) {
	sp := s.spread
	j := s.owner[i]
	a := sp.zone[j]
	na := sp.get(t, a)
	sg := s.heaps(s.p.syncGroup[i])
	want := s.dev[j] + s.scale[j]*s.p.syncWeight[i]
	target, visited := -1, 0
	s.stack = sg.room.visitTop(spreadSearch, s.stack,
		func(slot int32) bool { return s.dev[sg.members[slot]] >= want },
		func(slot int32) {
			visited++
			m := sg.members[slot]
			if s.dev[m] != want {
				return
			}
			exact = true
			if na-lo >= 2 && sp.zone[m] != a && na-sp.get(t, sp.zone[m]) >= 2 && (target < 0 || slot < target) {
				target = slot
			}
		})
	if visited == spreadSearch {
		exact = true // the search was cut short: a single move may exist
	}
	return target, exact
}

// spreadSwaps swaps syncs of tenant t out of zones where t is crowded for
// equally heavy syncs in zones where it is sparse, as long as each swap
// makes the spread strictly more even (see spreadTenant), and reports
// whether it made any.
//
// It finds partners through the per-zone, per-tenant lists of syncs
// (spreadState.buckets), so that it never looks at a sync that cannot be a
// partner: not t's own syncs elsewhere, not syncs in zones where t is not
// sparse, not syncs of tenants a swap would crowd. (Scanning members from
// the first one and their syncs, with a budget, spent the budget on the
// partners already swapped in, so spreading stopped part way, 4,050 : 950
// where 2,500 : 2,500 was possible, and reruns, scanning the same way,
// never got further.) Only failed eligibility checks (constraints) count
// against spreadBudget. The lists are sorted by sync, so what the search
// finds, and whether it finds anything, depends only on the plan, which
// keeps Sticky stable.
func (s *stickyState) spreadSwaps(t int32) bool {
	sp := s.spread
	sp.buildBuckets(s)
	count := sp.scratch[:0]
	for z := range sp.zones {
		count = append(count, sp.get(t, int32(z)))
	}
	sp.scratch = count
	desc := sp.order[:0]
	for z := range sp.zones {
		desc = append(desc, int32(z))
	}
	slices.SortFunc(desc, func(x, y int32) int {
		if c := cmp.Compare(count[y], count[x]); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	})
	sp.order = desc
	budget := spreadBudget
	for ai, a := range desc {
		for bi := len(desc) - 1; bi > ai; bi-- {
			b := desc[bi]
			if count[a]-count[b] < 2 {
				break // the zones left have at least as many of t
			}
			// Partners: syncs of no tenant, then tenants that are more
			// crowded in b than in a by enough that the swap helps t more
			// than it hurts them.
			if moved, ok := s.swapBuckets(t, -1, a, b, &budget); moved || !ok {
				return moved
			}
			for t2 := range int32(len(sp.tenantSyncs)) {
				if t2 == t || (count[a]-count[b])+(sp.get(t2, b)-sp.get(t2, a)) <= 2 {
					continue
				}
				if moved, ok := s.swapBuckets(t, t2, a, b, &budget); moved || !ok {
					return moved
				}
			}
			s.p.count(len(sp.tenantSyncs))
		}
	}
	return false
}

// swapBuckets swaps syncs of tenant t in zone a with equally heavy syncs of
// tenant t2 (-1: of no tenant) in zone b while each swap makes the spread
// more even and the move limit allows. It reports whether it moved
// anything, and false for ok once the budget is spent or the limit reached.
// Both buckets are sorted by weight, so equal weights are found by merging.
func (s *stickyState) swapBuckets(t, t2, a, b int32, budget *int) (moved, ok bool) {
	sp := s.spread
	ka, kb := sp.key(t, a), sp.key(t2, b)
	from, to := sp.bucket(ka), sp.bucket(kb)
	w := s.p.syncWeight
	// from[x] is the next sync of t to pair; to[y:] holds the partners not
	// lighter than it. A swap only removes from[x] and to[k] from these two
	// buckets (the syncs go to the other two), so the indexes stay valid.
	for x, y := 0, 0; x < len(from); x++ {
		i := from[x]
		for y < len(to) && w[to[y]] < w[i] {
			y++
		}
		if y == len(to) {
			break
		}
		s.p.count(1)
		// Find i a partner among the syncs of its weight.
		for k := y; k < len(to) && w[to[k]] == w[i]; k++ {
			p := to[k]
			j, mu := s.owner[i], s.owner[p]
			gi, gp := s.p.syncGroup[i], s.p.syncGroup[p]
			if !s.p.hasCandidate(gi, mu) || !s.p.hasCandidate(gp, j) {
				if *budget--; *budget <= 0 {
					return moved, false
				}
				continue
			}
			na, nb := sp.get(t, a), sp.get(t, b)
			d := 2 * (nb - na + 1)
			if t2 >= 0 {
				d += 2 * (sp.get(t2, a) - sp.get(t2, b) + 1)
			}
			if d >= 0 {
				return moved, true // each swap makes the next one less useful
			}
			if !s.allow(step{i, mu}, step{p, j}) {
				return moved, false
			}
			is, _ := slices.BinarySearch(s.p.groups[gi].members, j)
			it, _ := slices.BinarySearch(s.p.groups[gi].members, mu)
			ps, _ := slices.BinarySearch(s.p.groups[gp].members, mu)
			pt, _ := slices.BinarySearch(s.p.groups[gp].members, j)
			s.move(i, gi, int32(is), int32(it))
			s.move(p, gp, int32(ps), int32(pt))
			sp.swapped = append(sp.swapped, i)
			moved = true
			from, to = sp.bucket(ka), sp.bucket(kb)
			x-- // from[x] is now the next sync
			break
		}
	}
	return moved, true
}
