package main

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/keys"
)

// planRun is the leader's part of a cold start alone (-scenarios plan): the
// group's other members are bare member keys on one lease, with no
// process behind them, so no claims and no actors; only the measured
// member runs, in a child process, and leads. It measures how long the
// leader takes to get a complete target to every member, its heap, and
// the largest request it sends. Used for shapes whose members cannot all
// run in the bench's one process (1,000,000 × 1,000, see BENCHMARKS.md).
type planRun struct {
	Syncs        int     `json:"syncs"`
	Members      int     `json:"members"`
	AllTargetedS float64 `json:"all_targeted_s"` // child started → Describe shows every sync in a complete target
	Leader       memStat `json:"leader"`
}

func (b *bench) plan(ctx context.Context) ([]planRun, error) {
	var out []planRun
	for _, sh := range b.cfg.Plan {
		r, err := b.planOnce(ctx, sh)
		if err != nil {
			return nil, fmt.Errorf("plan %v: %w", sh, err)
		}
		b.logf("plan %v: every sync targeted after %.1fs; leader heap %.1f MB live, peak in use %.1f MB, largest request %d bytes",
			sh, r.AllTargetedS, r.Leader.HeapLiveMB, r.Leader.PeakHeapMB, r.Leader.MaxRequest)
		out = append(out, r)
	}
	return out, nil
}

func (b *bench) planOnce(ctx context.Context, sh shape) (planRun, error) {
	r := planRun{Syncs: sh.Syncs, Members: sh.Members}
	b.seq++
	group := fmt.Sprintf("plan-%d", b.seq)
	if err := b.env.putSyncs(ctx, group, sh.Syncs); err != nil {
		return r, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.env.dropGroup(dctx, group); err != nil {
			b.logf("drop %s: %v", group, err)
		}
	}()
	k, err := keys.New(batonPrefix, group)
	if err != nil {
		return r, err
	}
	// The other members: live (leased) keys, no process.
	lease, err := b.env.admin.Grant(ctx, 3600)
	if err != nil {
		return r, err
	}
	defer b.env.admin.Revoke(context.Background(), lease.ID)
	ids := memberIDs("m", sh.Members-1)
	for start := 0; start < len(ids); start += 128 {
		var ops []clientv3.Op
		for _, id := range ids[start:min(start+128, len(ids))] {
			ops = append(ops, clientv3.OpPut(k.Member(id), `{"weight":1}`, clientv3.WithLease(lease.ID)))
		}
		if _, err := b.env.admin.Txn(ctx).Then(ops...).Commit(); err != nil {
			return r, err
		}
	}
	start := time.Now()
	c, err := b.startChild("baton", group, "measured")
	if err != nil {
		return r, err
	}
	defer c.stop()
	deadline := start.Add(b.cfg.ColdTimeout)
	for {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("not every sync targeted after %v", b.cfg.ColdTimeout)
		}
		time.Sleep(2 * time.Second)
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		st, err := coordinator.Describe(dctx, b.env.admin, group)
		cancel()
		if err != nil {
			b.logf("plan %v: describe: %v", sh, err)
			continue
		}
		targeted := 0
		for _, s := range st.Syncs {
			if s.Target != "" {
				targeted++
			}
		}
		if st.PlanError != "" {
			b.logf("plan %v: %s", sh, st.PlanError)
		}
		if targeted == sh.Syncs {
			r.AllTargetedS = time.Since(start).Seconds()
			break
		}
	}
	// Wait for the child to own its share, so its heap is the leader's
	// after the load, not in the middle of it.
	if err := waitChild(c, b.cfg.Timeout, func(s memStat) bool { return s.Leader && s.Owned >= sh.Syncs/sh.Members }); err != nil {
		return r, err
	}
	r.Leader, err = c.ask("mem")
	r.Leader.System, r.Leader.Role, r.Leader.Syncs, r.Leader.Members = "baton", "leader", sh.Syncs, sh.Members
	return r, err
}
