package rebalance

// slotHeap is an indexed binary heap of slots (a member's place in a
// group), ordered by less. Unlike container/heap it keeps each slot's
// position, so a slot whose key changed is fixed in O(log n), and it avoids
// the interface calls on the hot path of Sticky.
type slotHeap struct {
	items []int32
	pos   []int32 // slot -> index in items, or -1; may be shared by heaps holding disjoint slots
	less  func(a, b int32) bool
}

func (h *slotHeap) init() {
	for i, s := range h.items {
		h.pos[s] = int32(i)
	}
	for i := len(h.items)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *slotHeap) top() (int32, bool) {
	if len(h.items) == 0 {
		return -1, false
	}
	return h.items[0], true
}

func (h *slotHeap) contains(s int32) bool { return h.pos[s] >= 0 }

func (h *slotHeap) push(s int32) {
	h.items = append(h.items, s)
	h.pos[s] = int32(len(h.items) - 1)
	h.up(len(h.items) - 1)
}

func (h *slotHeap) remove(s int32) {
	i := int(h.pos[s])
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items = h.items[:last]
	h.pos[s] = -1
	if i != last {
		h.fixAt(i)
	}
}

func (h *slotHeap) fix(s int32) { h.fixAt(int(h.pos[s])) }

func (h *slotHeap) fixAt(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *slotHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.pos[h.items[i]] = int32(i)
	h.pos[h.items[j]] = int32(j)
}

func (h *slotHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.items[i], h.items[parent]) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down sifts items[i] down and reports whether it moved.
func (h *slotHeap) down(i int) bool {
	start, n := i, len(h.items)
	for {
		child := 2*i + 1
		if child >= n {
			break
		}
		if r := child + 1; r < n && h.less(h.items[r], h.items[child]) {
			child = r
		}
		if !h.less(h.items[child], h.items[i]) {
			break
		}
		h.swap(i, child)
		i = child
	}
	return i > start
}

// visitTop calls f on the slots at the top of the heap for which keep
// holds, stopping after limit of them. keep must be monotone with the heap
// order (if it holds for a slot it holds for its parent), so the slots it
// selects form a subtree at the root and the walk never looks further down.
func (h *slotHeap) visitTop(limit int, stack []int32, keep func(s int32) bool, f func(s int32)) []int32 {
	if len(h.items) == 0 || !keep(h.items[0]) {
		return stack
	}
	stack = append(stack[:0], 0)
	for len(stack) > 0 && limit > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		f(h.items[i])
		limit--
		for _, c := range [2]int32{2*i + 2, 2*i + 1} {
			if int(c) < len(h.items) && keep(h.items[c]) {
				stack = append(stack, c)
			}
		}
	}
	return stack
}
