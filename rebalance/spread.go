package rebalance

import (
	"slices"
	"sort"
)

const (
	// spreadSearch bounds how many equally good members or syncs Sticky
	// compares when it picks one with Spread in mind.
	spreadSearch = 32
	// spreadBudget bounds the members and syncs looked at per tenant in one
	// pass for a balance-neutral spreading move. The bound keeps a pass
	// linear in the number of syncs when spreading cannot be improved (for
	// example because constraints pin a tenant to one zone); because the
	// search is a deterministic function of the plan, Sticky stays stable.
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
}

func newSpreadState(p *problem, o stickyOptions) *spreadState {
	sp := &spreadState{
		zone:   make([]int32, len(p.members)),
		tenant: make([]int32, len(p.syncs)),
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

// inc adds d to the count of sync i's tenant in member m's zone.
func (sp *spreadState) inc(i, m int32, d int32) {
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

// spreadTenant makes one move that lowers the sum over zones of the squared
// count of tenant t's syncs without changing the sum of dev²: a single move
// to a member with exactly the room the sync leaves behind, or a swap with
// an equally heavy sync (of no tenant, or of one the swap does not crowd
// more than it helps t).
func (s *stickyState) spreadTenant(t int32) bool {
	sp := s.spread
	syncs := sp.tenantSyncs[t]
	sp.stamp++
	distinct, hi, lo := 0, int32(0), int32(1<<30)
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
	if hi-lo < 2 {
		return false
	}
	budget := spreadBudget
	w := s.p.syncWeight
	for _, i := range syncs {
		j := s.owner[i]
		if j < 0 {
			continue
		}
		a := sp.zone[j]
		na := sp.get(t, a)
		if na-lo < 2 {
			continue
		}
		g := s.p.syncGroup[i]
		sg := s.heaps(g)
		x, _ := slices.BinarySearch(sg.members, j)
		from := int32(x)
		want := s.dev[j] + s.scale[j]*w[i]
		target := int32(-1)
		s.stack = sg.room.visitTop(spreadSearch, s.stack,
			func(slot int32) bool { return s.dev[sg.members[slot]] >= want },
			func(slot int32) {
				m := sg.members[slot]
				if s.dev[m] == want && sp.zone[m] != a && na-sp.get(t, sp.zone[m]) >= 2 && (target < 0 || slot < target) {
					target = slot
				}
			})
		if target >= 0 {
			if !s.allow(step{i, sg.members[target]}) {
				return false
			}
			s.move(i, g, from, target)
			return true
		}
		for u, mu := range sg.members {
			if budget--; budget <= 0 {
				return false
			}
			b := sp.zone[mu]
			nb := sp.get(t, b)
			if b == a || na-nb < 2 {
				continue
			}
			for _, ref := range s.memberSlots[mu] {
				held := s.groups[ref.group].held[ref.slot]
				if len(held) == 0 || !s.p.hasCandidate(ref.group, j) {
					continue
				}
				first := sort.Search(len(held), func(k int) bool { return w[held[k]] >= w[i] })
				for _, y := range held[first:] {
					if w[y] != w[i] {
						break
					}
					if budget--; budget <= 0 {
						return false
					}
					t2 := sp.tenant[y]
					if t2 == t {
						continue
					}
					d := 2 * (nb - na + 1)
					if t2 >= 0 {
						d += 2 * (sp.get(t2, a) - sp.get(t2, b) + 1)
					}
					if d < 0 {
						if !s.allow(step{i, mu}, step{y, j}) {
							return false
						}
						back, _ := slices.BinarySearch(s.groups[ref.group].members, j)
						s.move(i, g, from, int32(u))
						s.move(y, ref.group, ref.slot, int32(back))
						return true
					}
				}
			}
		}
	}
	return false
}
