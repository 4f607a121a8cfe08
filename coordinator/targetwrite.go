package coordinator

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
	"github.com/baton-go/baton/rebalance"
)

// targetWrite is one op of a plan's write, and what it does to the view
// once its Txn has succeeded.
type targetWrite struct {
	member string
	suffix string // of the key written or deleted (see targetKey)
	kind   writeKind
	op     clientv3.Op
	rec    *targetRecord // what a put writes
	bytes  int           // its share of the request
	ops    int           // its share of --max-txn-ops
}

type writeKind int

// planMoves counts the syncs whose member in plan is not the one whose
// complete target holds them now.
func planMoves(v *view, plan assignment.Plan) int {
	moves := 0
	prev := v.targetOf()
	for s, m := range plan {
		if prev[s] != m {
			moves++
		}
	}
	return moves
}

// targetWrites is the target diff, a pure function of the view and the
// plan (the leader and its benchmark both call it): it lists the writes
// that make the stored targets the plan's:
// for each live member whose target differs (or is incomplete, or has
// stray keys), its parts, then its head, then the deletes of keys it no
// longer has; and for each departed member with target keys, one nested
// Txn that deletes them all only while its member key is absent (it may
// have registered again since the view last saw it).
func targetWrites(k keys.Layout, v *view, in rebalance.Input, plan assignment.Plan, gen int64) (ws []targetWrite, written, dropped int) {
	next := plan.ByMember()
	for _, m := range in.Members {
		syncs := next[m.ID]
		slices.Sort(syncs)
		cur, clean := v.targetSyncs(m.ID)
		if (clean && slices.Equal(cur, syncs)) || (v.targets[m.ID] == nil && len(syncs) == 0) {
			continue
		}
		ws = appendTargetWrites(ws, k, v.targets[m.ID], m.ID, syncs, gen, preparedHandoffs(v, plan, cur, syncs))
		written++
	}
	for _, m := range slices.Sorted(maps.Keys(v.targets)) {
		if _, live := v.members[m]; !live {
			ws = append(ws, dropWrite(k, v, m))
			dropped++
		}
	}
	return ws, written, dropped
}

// appendTargetWrites appends the writes that make member m's target
// (stored as cur, nil if absent) hold syncs: its parts, then its head,
// then the deletes of the keys it no longer has.
func appendTargetWrites(ws []targetWrite, k keys.Layout, cur *targetKeys, m string, syncs []string, gen int64, handoffs map[string]string) []targetWrite {
	put := func(suffix string, rec targetRecord) {
		key := k.Target(m) + suffix
		val := encodeSorted(rec)
		ws = append(ws, targetWrite{member: m, suffix: suffix, kind: writePut, op: clientv3.OpPut(key, string(val)),
			rec: &rec, bytes: len(key) + len(val) + txnOpOverhead, ops: 1})
	}
	head, parts := splitTarget(gen, syncs, maxTargetValue)
	head.Handoffs = handoffs
	keep := map[string]bool{"": true}
	for i, p := range parts {
		put(partSuffix(i), p)
		keep[partSuffix(i)] = true
	}
	put("", head)
	if cur == nil {
		return ws
	}
	for _, suffix := range slices.Sorted(maps.Keys(cur.kvs)) {
		if !keep[suffix] {
			key := k.Target(m) + suffix
			ws = append(ws, targetWrite{member: m, suffix: suffix, kind: writeDelete,
				op: clientv3.OpDelete(key), bytes: len(key) + txnOpOverhead, ops: 1})
		}
	}
	return ws
}

// preparedHandoffs lists the syncs of cur (a member's target, sorted)
// that leave it for a live member whose Handler is a Preparer, with that
// member; up to maxHandoffBytes of them, in sync order.
func preparedHandoffs(v *view, plan assignment.Plan, cur, next []string) map[string]string {
	var out map[string]string
	size := 0
	for _, s := range cur {
		to, ok := plan[s]
		if !ok || !v.preparers[to] {
			continue
		}
		if _, stays := slices.BinarySearch(next, s); stays {
			continue
		}
		if size += len(s) + len(to) + 6; size > maxHandoffBytes {
			break
		}
		if out == nil {
			out = map[string]string{}
		}
		out[s] = to
	}
	return out
}

// dropWrite is the nested Txn that deletes departed member m's target
// keys, only while its member key is as the view has it: absent, or the
// very key it ignored (no lease, unreadable); a member that registered
// again meanwhile keeps its target. The keys are deleted one by one, never
// by prefix: only the leader's own keys go.
func dropWrite(k keys.Layout, v *view, m string) targetWrite {
	member := k.Member(m)
	guard := clientv3.Compare(clientv3.CreateRevision(member), "=", 0)
	if rev, ok := v.ignored[m]; ok {
		guard = clientv3.Compare(clientv3.ModRevision(member), "=", rev)
	}
	bytes := len(member) + 2*txnOpOverhead
	var dels []clientv3.Op
	for _, suffix := range slices.Sorted(maps.Keys(v.targets[m].kvs)) {
		key := k.Target(m) + suffix
		dels = append(dels, clientv3.OpDelete(key))
		bytes += len(key) + txnOpOverhead
	}
	return targetWrite{member: m, kind: writeDrop, op: clientv3.OpTxn([]clientv3.Cmp{guard}, dels, nil),
		bytes: bytes, ops: 2 + len(dels)}
}

// statusWrite is the put of status/leader as st.
func statusWrite(k keys.Layout, st leaderStatus) targetWrite {
	key := k.LeaderStatus()
	b, _ := json.Marshal(st)
	return targetWrite{kind: writeStatus, op: clientv3.OpPut(key, string(b)), bytes: len(key) + len(b) + txnOpOverhead, ops: 1}
}

// chunkWrites splits writes into Txns within both of etcd's limits: at
// most maxTxnOps ops (nested ones counted) and maxTxnBytes bytes. Writes
// keep their order, so a member's parts go before its head.
func chunkWrites(ws []targetWrite) ([][]targetWrite, error) {
	var out [][]targetWrite
	start, ops, bytes := 0, 0, 0
	for i, w := range ws {
		if w.bytes > maxTxnBytes || w.ops > maxTxnOps {
			return nil, fmt.Errorf("coordinator: a target write for member %q of %d bytes cannot be sent", w.member, w.bytes)
		}
		if ops+w.ops > maxTxnOps || bytes+w.bytes > maxTxnBytes {
			out = append(out, ws[start:i])
			start, ops, bytes = i, 0, 0
		}
		ops += w.ops
		bytes += w.bytes
	}
	if start < len(ws) {
		out = append(out, ws[start:])
	}
	return out, nil
}

// recordWrites records in the view what the writes of one Txn that
// succeeded did, at its revision, and returns how many took effect (a
// refused drop does not).
func (v *view) recordWrites(chunk []targetWrite, resp *clientv3.TxnResponse) (effective int) {
	rev := resp.Header.Revision
	for i, w := range chunk {
		t := v.targets[w.member]
		switch w.kind {
		case writePut:
			if t == nil {
				t = &targetKeys{}
				v.targets[w.member] = t
			}
			t.set(w.suffix, rev, w.rec)
			effective++
		case writeDelete:
			if t != nil {
				t.del(w.suffix)
			}
			effective++
		case writeDrop:
			if resp.Responses[i].GetResponseTxn().GetSucceeded() {
				delete(v.targets, w.member)
				effective++
			}
		case writeStatus:
			v.planError, v.statusUnknown = "", false
		}
		if t != nil && t.empty() {
			delete(v.targets, w.member)
		}
	}
	return effective
}
