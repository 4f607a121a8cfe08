package coordinator

import (
	"context"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/rebalance"
)

// The leader's hot paths without etcd: loading the group into its view,
// building the Balancer's input, and the compute of one rebalance round
// (input, Sticky, Validate, and the target diff the leader writes:
// targetWrites and chunkWrites, the very functions Coordinator.rebalance
// calls before its Txns). And the
// member's: decoding its target, which it does on every change of it.

var benchShapes = []struct{ syncs, members int }{{10_000, 50}, {100_000, 1_000}}

// benchGroup is the etcd content of a balanced group: every sync owned by
// and targeted at member i mod members.
type benchGroup struct {
	k                               keys.Layout
	members, syncs, targets, owners []*mvccpb.KeyValue
}

func newBenchGroup(b *testing.B, nSyncs, nMembers int) *benchGroup {
	b.Helper()
	k, err := keys.New(DefaultPrefix, "bench")
	if err != nil {
		b.Fatal(err)
	}
	g := &benchGroup{k: k}
	per := make([][]string, nMembers)
	for i := range nMembers {
		id := memberID(i)
		g.members = append(g.members, &mvccpb.KeyValue{Key: []byte(k.Member(id)), Value: encodeMember(assignment.Member{ID: id, Weight: 1}, false)})
	}
	for i := range nSyncs {
		id := fmt.Sprintf("sync-%06d", i)
		spec, err := encodeSync(assignment.Sync{ID: id, Spec: []byte(fmt.Sprintf(`{"table":%q}`, id))})
		if err != nil {
			b.Fatal(err)
		}
		g.syncs = append(g.syncs, &mvccpb.KeyValue{Key: []byte(k.Sync(id)), Value: spec, ModRevision: int64(10 + i)})
		m := i % nMembers
		per[m] = append(per[m], id)
		g.owners = append(g.owners, &mvccpb.KeyValue{Key: []byte(k.Owner(id)), Value: []byte(memberID(m)), CreateRevision: int64(nSyncs + 10 + i)})
	}
	for m := range nMembers {
		g.targets = append(g.targets, &mvccpb.KeyValue{Key: []byte(k.Target(memberID(m))), Value: encodeTarget(1, per[m])})
	}
	return g
}

func memberID(i int) string { return fmt.Sprintf("member-%04d", i) }

// load builds the leader's view as loadView does from its snapshot.
func (g *benchGroup) load() *view {
	v := newView()
	for _, kv := range g.members {
		v.applyMember(g.k, kv, mvccpb.PUT)
	}
	for _, kv := range g.syncs {
		v.applySync(g.k, kv, mvccpb.PUT)
	}
	for _, kv := range g.targets {
		v.applyTarget(g.k, kv, mvccpb.PUT)
	}
	for _, kv := range g.owners {
		v.applyOwner(g.k, kv, mvccpb.PUT)
	}
	return v
}

// round is the compute of Coordinator.rebalance, up to its Txns: the
// Balancer's input, the plan, its validation, the target diff and its
// split into Txns. It returns how many targets changed.
func round(b *testing.B, k keys.Layout, v *view, bal rebalance.Balancer) int {
	in := v.input()
	plan, err := bal.Balance(context.Background(), in)
	if err != nil {
		b.Fatal(err)
	}
	if err := rebalance.Validate(in, plan); err != nil {
		b.Fatal(err)
	}
	ws, written, _ := targetWrites(k, v, in, plan, v.gen+1)
	if _, err := chunkWrites(ws); err != nil {
		b.Fatal(err)
	}
	_ = planMoves(v, plan)
	return written
}

func BenchmarkLeaderLoadView(b *testing.B) {
	for _, sh := range benchShapes {
		b.Run(fmt.Sprintf("syncs=%d/members=%d", sh.syncs, sh.members), func(b *testing.B) {
			g := newBenchGroup(b, sh.syncs, sh.members)
			b.ReportAllocs()
			for b.Loop() {
				_ = g.load()
			}
		})
	}
}

func BenchmarkLeaderInput(b *testing.B) {
	for _, sh := range benchShapes {
		b.Run(fmt.Sprintf("syncs=%d/members=%d", sh.syncs, sh.members), func(b *testing.B) {
			v := newBenchGroup(b, sh.syncs, sh.members).load()
			b.ReportAllocs()
			for b.Loop() {
				_ = v.input()
			}
		})
	}
}

// BenchmarkLeaderRound is one rebalance round's compute with the default
// Sticky balancer: "unchanged" after a trigger that changed nothing (the
// leader still runs the whole round), "join" when one member was added.
func BenchmarkLeaderRound(b *testing.B) {
	for _, sh := range benchShapes {
		for _, event := range []string{"unchanged", "join"} {
			b.Run(fmt.Sprintf("syncs=%d/members=%d/%s", sh.syncs, sh.members, event), func(b *testing.B) {
				g := newBenchGroup(b, sh.syncs, sh.members)
				k, v := g.k, g.load()
				if event == "join" {
					id := memberID(sh.members)
					v.members[id] = assignment.Member{ID: id, Weight: 1}
				}
				bal := rebalance.Sticky()
				b.ReportAllocs()
				for b.Loop() {
					if got := round(b, k, v, bal); (got > 0) != (event == "join") {
						b.Fatalf("%s: %d targets changed", event, got)
					}
				}
			})
		}
	}
}

// BenchmarkMemberDecodeTarget is what a member does with each new version
// of its target: a member of a 10,000-sync, 50-member group owns 200; of a
// 100,000-sync, 1,000-member group, 100; and one member alone owns all.
func BenchmarkMemberDecodeTarget(b *testing.B) {
	for _, n := range []int{100, 200, 10_000, 100_000} {
		b.Run(fmt.Sprintf("owned=%d", n), func(b *testing.B) {
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("sync-%06d", i)
			}
			val := encodeTarget(7, ids)
			b.SetBytes(int64(len(val)))
			b.ReportAllocs()
			for b.Loop() {
				t, err := decodeTarget("m", val)
				if err != nil || len(t.Syncs) != n {
					b.Fatal(err, len(t.Syncs))
				}
			}
		})
	}
}
