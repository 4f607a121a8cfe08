package main

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/rebalance"
)

// ring is a plain consistent-hash ring, the textbook baseline: every member
// puts vnodes × weight points on a 64-bit circle and a sync goes to the
// first point clockwise from its own hash. There is no load bound, and
// constraints and draining are ignored (the comparison uses neither).
func ring(vnodes int) rebalance.Balancer {
	return rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		type point struct {
			hash   uint64
			member string
		}
		var points []point
		for _, m := range in.Members {
			for i := range vnodes * m.EffectiveWeight() {
				points = append(points, point{hash64(m.ID + "#" + strconv.Itoa(i)), m.ID})
			}
		}
		slices.SortFunc(points, func(a, b point) int {
			if a.hash != b.hash {
				if a.hash < b.hash {
					return -1
				}
				return 1
			}
			return strings.Compare(a.member, b.member)
		})
		plan := make(assignment.Plan, len(in.Syncs))
		if len(points) == 0 {
			return plan, nil
		}
		for _, s := range in.Syncs {
			h := hash64(s.ID)
			i, _ := slices.BinarySearchFunc(points, h, func(p point, h uint64) int {
				switch {
				case p.hash < h:
					return -1
				case p.hash > h:
					return 1
				}
				return 0
			})
			if i == len(points) {
				i = 0 // wrap around the circle
			}
			plan[s.ID] = points[i].member
		}
		return plan, nil
	})
}

// hash64 is FNV-1a followed by the splitmix64 finalizer: FNV alone leaves
// similar keys ("member-01#1", "member-01#2") close together on the circle.
func hash64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
