package rebalance

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/baton-go/baton/assignment"
)

// maxWeight caps member and sync weights inside this package, so that loads
// scaled by a member weight stay far from int64 overflow.
const maxWeight = 1 << 24

// problem is an Input prepared for placement: members and syncs sorted by
// ID, and every sync mapped to the group of members that may run it.
//
// Syncs with the same set of candidate members share a group, whatever
// labels led there, so the work done per group (heaps, shares) grows with
// the number of distinct constraints, not with the number of syncs.
type problem struct {
	members      []assignment.Member // sorted by ID
	syncs        []assignment.Sync   // sorted by ID
	memberIndex  map[string]int32
	memberWeight []int64
	syncWeight   []int64
	syncGroup    []int32 // index into groups; -1 if no live member is eligible
	groups       []group
	memberGroups [][]int32 // per member: the groups it is a candidate of, ascending
	maxSync      int64     // the heaviest sync weight (0 without syncs)
	poller                 // the caller's context: every phase of a balancer counts its work here
}

// group is a set of syncs that may run on the same members.
type group struct {
	members      []int32 // candidates, ascending: eligible non-draining members, else eligible draining ones
	draining     bool    // no eligible member is non-draining, so the candidates are draining members
	weight       int64   // total weight of the group's syncs
	memberWeight int64   // total weight of the candidates
	syncs        int     // how many syncs the group has
}

type requirement struct{ name, value string }

// newProblem prepares in. It returns an error wrapping ErrInvalidInput if
// member or sync IDs repeat, together with a problem that is still usable
// for questions that do not depend on uniqueness.
func newProblem(in Input) (*problem, error) {
	return prepare(context.Background(), in)
}

// prepare is newProblem for a balancer: it also returns, and no problem,
// once ctx is done.
func prepare(ctx context.Context, in Input) (*problem, error) {
	p := &problem{poller: poller{ctx: ctx}}
	if err := p.add(len(in.Members) + len(in.Syncs)); err != nil {
		return nil, err
	}
	p.members = sortedByID(in.Members, func(m assignment.Member) string { return m.ID })
	p.syncs = sortedByID(in.Syncs, func(s assignment.Sync) string { return s.ID })
	if err := p.add(len(p.members) + len(p.syncs)); err != nil {
		return nil, err
	}
	var err error
	if id, dup := firstDuplicate(p.members, func(m assignment.Member) string { return m.ID }); dup {
		err = fmt.Errorf("%w: duplicate member ID %q", ErrInvalidInput, id)
	} else if id, dup := firstDuplicate(p.syncs, func(s assignment.Sync) string { return s.ID }); dup {
		err = fmt.Errorf("%w: duplicate sync ID %q", ErrInvalidInput, id)
	}

	p.memberIndex = make(map[string]int32, len(p.members))
	p.memberWeight = make([]int64, len(p.members))
	for i, m := range p.members {
		p.memberIndex[m.ID] = int32(i)
		p.memberWeight[i] = int64(min(m.EffectiveWeight(), maxWeight))
	}
	p.syncWeight = make([]int64, len(p.syncs))
	p.syncGroup = make([]int32, len(p.syncs))
	b := groupBuilder{p: p, byRequirements: map[string]int32{}, byCandidates: map[string]int32{}, unconstrained: -2}
	var reqs []requirement
	for i := range p.syncs {
		if err := p.add(1); err != nil {
			return nil, err
		}
		if b.stopped != nil {
			return nil, b.stopped
		}
		s := &p.syncs[i]
		w := int64(min(s.EffectiveWeight(), maxWeight))
		p.syncWeight[i] = w
		p.maxSync = max(p.maxSync, w)
		reqs = requirements(s.Labels, reqs[:0])
		g := b.groupOf(reqs)
		p.syncGroup[i] = g
		if g >= 0 {
			p.groups[g].weight += w
			p.groups[g].syncs++
		}
	}
	if b.stopped != nil {
		return nil, b.stopped
	}
	p.memberGroups = make([][]int32, len(p.members))
	for g := range p.groups {
		if err := p.add(len(p.groups[g].members)); err != nil {
			return nil, err
		}
		for _, m := range p.groups[g].members {
			p.memberGroups[m] = append(p.memberGroups[m], int32(g))
		}
	}
	return p, err
}

func sortedByID[T any](xs []T, id func(T) string) []T {
	less := func(a, b T) int { return strings.Compare(id(a), id(b)) }
	if slices.IsSortedFunc(xs, less) {
		return xs // read only: the contract forbids modifying the caller's slice
	}
	xs = slices.Clone(xs)
	slices.SortStableFunc(xs, less)
	return xs
}

func firstDuplicate[T any](sorted []T, id func(T) string) (string, bool) {
	for i := 1; i < len(sorted); i++ {
		if id(sorted[i]) == id(sorted[i-1]) {
			return id(sorted[i]), true
		}
	}
	return "", false
}

// requirements appends the require: labels in labels to buf, sorted by name.
func requirements(labels map[string]string, buf []requirement) []requirement {
	for k, v := range labels {
		if name, ok := strings.CutPrefix(k, RequirePrefix); ok {
			buf = append(buf, requirement{name, v})
		}
	}
	slices.SortFunc(buf, func(a, b requirement) int { return strings.Compare(a.name, b.name) })
	return buf
}

// hasCandidate reports whether member m may take syncs of group g.
func (p *problem) hasCandidate(g, m int32) bool {
	_, ok := slices.BinarySearch(p.memberGroups[m], g)
	return ok
}

type groupBuilder struct {
	p              *problem
	byRequirements map[string]int32 // encoded requirements -> group (or -1)
	byCandidates   map[string]int32 // encoded candidate set -> group
	unconstrained  int32            // group of syncs without requirements; -2 until computed
	columns        map[string]*labelColumn
	eligibleMemo   map[string][]int32 // encoded requirements, rarest first -> eligible members
	key            []byte
	ends           []int
	byRarity       []requirement
	cols           []*labelColumn
	stopped        error // the context's error, once a look at it saw it done
}

// work counts n units of work on the problem's poller and remembers the
// context's end, which the caller checks after each sync.
func (b *groupBuilder) work(n int) {
	if err := b.p.add(n); err != nil && b.stopped == nil {
		b.stopped = err
	}
}

// labelColumn is one member label, indexed both ways: each member's value
// and, per value, the members that have it.
type labelColumn struct {
	ids     map[string]int32 // value -> id
	of      []int32          // member -> value id, -1 without the label
	members [][]int32        // value id -> members with that value, ascending
}

func (b *groupBuilder) column(name string) *labelColumn {
	if c, ok := b.columns[name]; ok {
		return c
	}
	b.work(len(b.p.members))
	c := &labelColumn{ids: map[string]int32{}, of: make([]int32, len(b.p.members))}
	for m, mem := range b.p.members {
		v, ok := mem.Labels[name]
		if !ok {
			c.of[m] = -1
			continue
		}
		id, ok := c.ids[v]
		if !ok {
			id = int32(len(c.members))
			c.ids[v] = id
			c.members = append(c.members, nil)
		}
		c.of[m] = id
		c.members[id] = append(c.members[id], int32(m))
	}
	if b.columns == nil {
		b.columns = map[string]*labelColumn{}
	}
	b.columns[name] = c
	return c
}

func (b *groupBuilder) groupOf(reqs []requirement) int32 {
	if len(reqs) == 0 {
		if b.unconstrained == -2 {
			all := make([]int32, len(b.p.members))
			for i := range all {
				all[i] = int32(i)
			}
			b.unconstrained = b.intern(b.candidates(all))
		}
		return b.unconstrained
	}
	b.key = appendRequirements(b.key[:0], reqs)
	if g, ok := b.byRequirements[string(b.key)]; ok {
		return g
	}
	key := string(b.key)
	g := b.intern(b.candidates(b.eligible(reqs)))
	b.byRequirements[key] = g
	return g
}

func appendRequirements(key []byte, reqs []requirement) []byte {
	for _, r := range reqs {
		key = binary.AppendUvarint(key, uint64(len(r.name)))
		key = append(key, r.name...)
		key = binary.AppendUvarint(key, uint64(len(r.value)))
		key = append(key, r.value...)
	}
	return key
}

// eligible returns, ascending, the members that meet every requirement in
// reqs. It runs once per distinct set of requirements and is most of the
// work per set, so it avoids a map lookup per member and requirement: it
// starts from the members with the rarest required value and keeps those
// whose label columns match the other requirements, one requirement at a
// time. Each step's result is remembered under its prefix of requirements
// (rarest first), which sets of requirements tend to share, so a new set
// usually costs one pass over the short list of its longest known prefix.
func (b *groupBuilder) eligible(reqs []requirement) []int32 {
	b.byRarity = append(b.byRarity[:0], reqs...)
	size := func(r requirement) int {
		c := b.column(r.name)
		if id, ok := c.ids[r.value]; ok {
			return len(c.members[id])
		}
		return 0
	}
	slices.SortStableFunc(b.byRarity, func(x, y requirement) int { return cmp.Compare(size(x), size(y)) })
	b.key, b.ends, b.cols = b.key[:0], b.ends[:0], b.cols[:0]
	for i, r := range b.byRarity {
		b.key = appendRequirements(b.key, b.byRarity[i:i+1])
		b.ends = append(b.ends, len(b.key))
		b.cols = append(b.cols, b.column(r.name))
	}
	id, ok := b.cols[0].ids[b.byRarity[0].value]
	if !ok {
		return nil // no member has the rarest required value
	}
	// Start from the longest remembered prefix, else from the members with
	// the rarest value.
	known, list := 1, b.cols[0].members[id]
	for k := len(b.byRarity); k > 1; k-- {
		if l, ok := b.eligibleMemo[string(b.key[:b.ends[k-1]])]; ok {
			known, list = k, l
			break
		}
	}
	for k := known; k < len(b.byRarity); k++ {
		b.work(len(list))
		c := b.cols[k]
		id, ok := c.ids[b.byRarity[k].value]
		var next []int32
		for _, m := range list {
			if ok && c.of[m] == id {
				next = append(next, m)
			}
		}
		list = next
		if b.eligibleMemo == nil {
			b.eligibleMemo = map[string][]int32{}
		}
		b.eligibleMemo[string(b.key[:b.ends[k]])] = list
		if len(list) == 0 {
			return nil
		}
	}
	return list
}

// candidates returns, of the eligible members, the non-draining ones if
// there are any, else the draining ones. Draining members therefore take a
// sync only when nobody else can, and keep it running until somebody can.
func (b *groupBuilder) candidates(eligible []int32) (members []int32, draining bool) {
	b.work(len(eligible))
	for _, m := range eligible {
		if !b.p.members[m].Draining {
			members = append(members, m)
		}
	}
	if len(members) > 0 {
		return members, false
	}
	return eligible, len(eligible) > 0
}

// intern returns the group with exactly these candidates, creating it.
func (b *groupBuilder) intern(members []int32, draining bool) int32 {
	if len(members) == 0 {
		return -1
	}
	b.work(len(members))
	key := make([]byte, 0, 4*len(members))
	for _, m := range members {
		key = binary.LittleEndian.AppendUint32(key, uint32(m))
	}
	if g, ok := b.byCandidates[string(key)]; ok {
		return g
	}
	g := int32(len(b.p.groups))
	var w int64
	for _, m := range members {
		w += b.p.memberWeight[m]
	}
	b.p.groups = append(b.p.groups, group{members: members, draining: draining, memberWeight: w})
	b.byCandidates[string(key)] = g
	return g
}

// fairShares returns each member's fair load in weight units. Each group's
// load is poured over its candidates in proportion to their weight, topping
// up the least-filled first ("water-filling"); groups with the least
// candidate weight go first, so that constrained syncs claim their few
// members before unconstrained ones fill in around them. Without
// constraints this is simply total load × member weight / total weight.
func (p *problem) fairShares() ([]float64, error) {
	share := make([]float64, len(p.members))
	var byFill []int32
	fill := func(m int32) float64 { return share[m] / float64(p.memberWeight[m]) }
	for _, g := range p.fillOrder() {
		gr := &p.groups[g]
		if gr.weight == 0 {
			continue
		}
		if err := p.add(len(gr.members)); err != nil {
			return nil, err
		}
		byFill = append(byFill[:0], gr.members...)
		slices.SortStableFunc(byFill, func(a, b int32) int { return cmp.Compare(fill(a), fill(b)) })
		// Raise the water level across the least-filled members until the
		// group's load is used up.
		level, left, w := fill(byFill[0]), float64(gr.weight), 0.0
		for i, m := range byFill {
			w += float64(p.memberWeight[m])
			next := math.Inf(1)
			if i+1 < len(byFill) {
				next = fill(byFill[i+1])
			}
			if need := (next - level) * w; left <= need {
				level += left / w
				break
			} else {
				left -= need
				level = next
			}
		}
		for _, m := range byFill {
			if fill(m) < level {
				share[m] = level * float64(p.memberWeight[m])
			}
		}
	}
	return share, nil
}

// fillOrder returns the groups by ascending total candidate weight (then
// by index): the order in which fairShares pours their load and Sticky
// places their syncs, so that syncs with few possible members are placed
// before those that can go anywhere.
func (p *problem) fillOrder() []int32 {
	order := make([]int32, len(p.groups))
	for g := range order {
		order[g] = int32(g)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		return cmp.Compare(p.groups[a].memberWeight, p.groups[b].memberWeight)
	})
	return order
}

// scaledShares returns each member's fair share multiplied by a scale, as
// exact integers, and each member's scale. Members that can exchange syncs
// (connected through shared groups) share one scale and their scaled shares
// add up exactly to scale × their groups' load, so that sums of deviations
// cancel exactly: this is what lets Sticky compare loads without rounding.
// A group whose members take no other group's syncs gets the scale equal to
// its candidates' total weight and exact proportional shares.
func (p *problem) scaledShares() (share, scale []int64, err error) {
	share = make([]int64, len(p.members))
	scale = make([]int64, len(p.members))
	comps, err := p.components()
	if err != nil {
		return nil, nil, err
	}
	var float []float64 // fairShares, computed for the first component that needs them
	for _, c := range comps {
		if err := p.add(len(c.groups) + len(c.members)); err != nil {
			return nil, nil, err
		}
		k := c.scale()
		var exact []uint64
		var rem []float64
		if len(c.groups) == 1 {
			exact, rem = p.proportionalShares(c, k)
		} else {
			if float == nil {
				if float, err = p.fairShares(); err != nil {
					return nil, nil, err
				}
			}
			exact, rem = c.flooredShares(float, k)
		}
		roundToSum(exact, rem, uint64(c.load)*uint64(k))
		for i, m := range c.members {
			share[m], scale[m] = int64(exact[i]), k
		}
	}
	return share, scale, nil
}

// component is a set of groups connected through shared candidates, with
// their candidates: the members that can exchange syncs, directly or
// through other members, and so share one scale in scaledShares.
type component struct {
	groups  []int32 // ascending
	members []int32 // ascending; a member is in the component of its groups
	load    int64   // total weight of the groups' syncs
	weight  int64   // total weight of the members
}

// components returns the components of the groups, ordered by their lowest
// group.
func (p *problem) components() ([]*component, error) {
	root, err := p.groupRoots()
	if err != nil {
		return nil, err
	}
	byRoot := map[int32]*component{}
	var comps []*component
	for g, r := range root {
		c := byRoot[r]
		if c == nil {
			c = &component{}
			byRoot[r] = c
			comps = append(comps, c)
		}
		c.groups = append(c.groups, int32(g))
		c.load += p.groups[g].weight
	}
	for m, gs := range p.memberGroups {
		if len(gs) > 0 {
			c := byRoot[root[gs[0]]]
			c.members = append(c.members, int32(m))
			c.weight += p.memberWeight[m]
		}
	}
	return comps, nil
}

// groupRoots returns, per group, the lowest group connected to it through
// shared candidates (union-find over groups).
func (p *problem) groupRoots() ([]int32, error) {
	parent := make([]int32, len(p.groups))
	for g := range parent {
		parent[g] = int32(g)
	}
	find := func(g int32) int32 {
		for parent[g] != g {
			parent[g] = parent[parent[g]]
			g = parent[g]
		}
		return g
	}
	for _, gs := range p.memberGroups {
		if err := p.add(len(gs)); err != nil {
			return nil, err
		}
		for _, g := range gs[min(1, len(gs)):] {
			if a, b := find(gs[0]), find(g); a != b {
				parent[max(a, b)] = min(a, b)
			}
		}
	}
	for g := range parent {
		parent[g] = find(int32(g))
	}
	return parent, nil
}

// scale returns the component's scale: its members' total weight, unless
// scale × load would exceed 2⁶¹, in which case the largest scale (at least
// 1) that keeps it within.
func (c *component) scale() int64 {
	k := c.weight
	if hi, lo := bits.Mul64(uint64(k), uint64(c.load)); hi != 0 || lo > 1<<61 {
		k = max(1, (1<<61)/max(c.load, 1))
	}
	return k
}

// proportionalShares returns, for a component of one group, each member's
// scaled share load × weight × k / total weight, computed exactly in 128
// bits and rounded down, and the fraction rounding down dropped.
func (p *problem) proportionalShares(c *component, k int64) (exact []uint64, rem []float64) {
	exact = make([]uint64, len(c.members))
	rem = make([]float64, len(c.members))
	for i, m := range c.members {
		hi, lo := bits.Mul64(uint64(c.load)*uint64(k), uint64(p.memberWeight[m]))
		q, r := bits.Div64(hi, lo, uint64(c.weight))
		exact[i], rem[i] = q, float64(r)/float64(c.weight)
	}
	return exact, rem
}

// flooredShares returns each member's fair share (float, per member of the
// problem) times k, rounded down, and the fraction rounding down dropped.
func (c *component) flooredShares(float []float64, k int64) (exact []uint64, rem []float64) {
	exact = make([]uint64, len(c.members))
	rem = make([]float64, len(c.members))
	for i, m := range c.members {
		x := float[m] * float64(k)
		f := math.Floor(x)
		exact[i], rem[i] = uint64(f), x-f
	}
	return exact, rem
}

// roundToSum adjusts the rounded-down shares in exact, in place, so that
// they add up to want: it hands out what rounding lost one unit at a time,
// largest remainder (rem) first, or takes back what float shares
// overshot, smallest remainder first, never below zero.
func roundToSum(exact []uint64, rem []float64, want uint64) {
	var sum uint64
	for _, e := range exact {
		sum += e
	}
	idx := make([]int, len(exact))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(rem[b], rem[a]) })
	for i := 0; sum < want; i = (i + 1) % len(idx) {
		exact[idx[i]]++
		sum++
	}
	for i := 0; sum > want; i = (i + 1) % len(idx) {
		if j := idx[len(idx)-1-i]; exact[j] > 0 {
			exact[j]--
			sum--
		}
	}
}
