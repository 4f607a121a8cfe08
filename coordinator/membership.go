package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/baton-go/baton/internal/wait"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Membership: a member's record at members/<id>, held by its session's
// lease. register writes it when a session starts (Join, and each rejoin
// after a lost session); keepMember keeps it right while the session lives
// (puts it back if deleted, writes the drain flag); the lease's revoke, or
// its expiry, deregisters the member. The drain request that an operator
// writes into the record (Admin.Drain) is read and written here too.

// register starts a session and registers the member key with it.
func (c *Coordinator) register(ctx context.Context) (*session, error) {
	for {
		sess, err := newSession(ctx, c.cli, c.o.ttl, c.o.revokeTimeout, c.log, c.m)
		if err != nil {
			return nil, err
		}
		ok, err := c.registerMember(ctx, sess, c.draining.Load())
		if ok {
			return sess, nil
		}
		rctx, cancel := c.giveBackCtx(sess.ttl)
		sess.closeAndRevoke(rctx)
		cancel()
		if err != nil {
			return nil, err
		}
	}
}

// giveBackCtx bounds the revoke of a lease that could not be registered:
// by ttl, and by Leave's ctx if Leave is called, before or during the
// revoke (a Leave during a rejoin must not wait a TTL for it; a lease not
// revoked expires unused).
func (c *Coordinator) giveBackCtx(ttl time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), ttl)
	stop := context.AfterFunc(c.leaveOver, cancel)
	return ctx, func() { stop(); cancel() }
}

// registerMember creates members/<id> with the session's lease if absent
// (or present without a lease: written by hand, it is no live session's).
// It returns false with no error when the session was lost while waiting.
func (c *Coordinator) registerMember(ctx context.Context, s *session, draining bool) (bool, error) {
	key := c.keys.Member(c.o.memberID)
	next := c.keys.Successor(c.o.memberID)
	val := c.memberValue(draining)
	for {
		// An absent key's lease compares as 0. The request is bounded by
		// the TTL: a rejoin runs on the client's context, with no deadline.
		// The successor marker (ours, or a rival's for the same ID) goes
		// with the registration.
		tctx, tcancel := context.WithTimeout(ctx, c.o.ttl)
		resp, err := c.cli.Txn(tctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", 0)).
			Then(clientv3.OpPut(key, val, clientv3.WithLease(s.id)), clientv3.OpDelete(next)).
			Else(clientv3.OpGet(key)).Commit()
		tcancel()
		if err != nil {
			c.m.etcdError("register")
			return false, fmt.Errorf("coordinator: register member %q: %w", c.o.memberID, err)
		}
		if resp.Succeeded {
			return true, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) == s.id {
			return true, nil
		}
		holder := int64(0)
		if len(kvs) == 1 {
			holder = kvs[0].Lease
		}
		c.log.Warn("member ID held by another session; waiting for it to end", "holder_lease", fmt.Sprintf("%x", holder))
		// Tell the leader a successor waits, so that the holder's
		// departure is not planned before this registration follows it
		// (which would move the member's syncs away and back). Best
		// effort: without the marker the departure is planned at once,
		// and the syncs come back with the registration. The marker
		// lives on this session's lease.
		mctx, mcancel := context.WithTimeout(ctx, c.o.ttl)
		if _, err := c.cli.Put(mctx, next, c.o.memberID, clientv3.WithLease(s.id)); err != nil {
			c.log.Warn("could not mark this member as a successor", "error", err)
		}
		mcancel()
		// Deleted, or the watch broke: look again.
		_ = wait.Deleted(ctx, c.cli, key, resp.Header.Revision+1, s.AtRisk())
		switch {
		case ctx.Err() != nil:
			return false, fmt.Errorf("%w: %q is held by lease %x (%v)", ErrMemberIDInUse, c.o.memberID, holder, ctx.Err())
		case s.isAtRisk():
			return false, nil
		}
	}
}

// memberValue is what members/<id> holds for this member.
func (c *Coordinator) memberValue(draining bool) string {
	return string(encodeMember(assignment.Member{ID: c.o.memberID, Weight: c.o.weight, Labels: c.o.labels, Draining: draining}, c.prep != nil))
}

// keepMember makes members/<self> say what this member is, given the key as
// last seen (nil: deleted, or to be read). It puts the key back on the
// session's lease if it was deleted (an operator's mistake: a member
// without a key gets no syncs, yet campaigns); it adopts a drain set from
// outside (Admin.Drain) and acknowledges it by writing the key itself,
// which Admin.Drain waits for; and it writes the drain that Drain asked
// for. It returns errMemberIDTaken when another lease holds the key.
func (w *worker) keepMember(kv *mvccpb.KeyValue) error {
	w.mu.Lock()
	leaving := w.leaving
	w.mu.Unlock()
	if leaving {
		return nil // Leave deletes the key: it must not come back
	}
	if kv != nil && kv.Lease != 0 {
		if clientv3.LeaseID(kv.Lease) != w.sess.id {
			return fmt.Errorf("%w: lease %x", errMemberIDTaken, kv.Lease)
		}
		m, err := decodeMember(w.c.o.memberID, kv.Value)
		if err == nil && m.Draining && !w.c.draining.Load() {
			w.c.draining.Store(true)
			// Acknowledge it: Admin.Drain waits for the member's own write.
			w.c.log.Info("draining, as asked through the member key")
		} else if err == nil && m.Draining == w.c.draining.Load() && !drainRequested(kv.Value) {
			w.memberPending.Store(false)
			w.showDrain(m.Draining)
			return nil
		}
	}
	draining := w.c.draining.Load()
	if err := w.writeMember(draining); err != nil {
		return err
	}
	w.memberPending.Store(false)
	w.showDrain(draining)
	return nil
}

// writeMember writes members/<self> as this member, draining or not: over
// the key while it is this session's, else only if it is absent or has no
// lease (written by hand: no live session holds it). It returns
// errMemberIDTaken when another lease holds the key.
func (w *worker) writeMember(draining bool) error {
	key := w.c.keys.Member(w.c.o.memberID)
	put := clientv3.OpPut(key, w.c.memberValue(draining), clientv3.WithLease(w.sess.id))
	// An absent key's lease compares as 0. Bounded like a claim: a Txn stuck on an unresponsive etcd member
	// must not hold the worker's watches up.
	ctx, cancel := context.WithTimeout(w.ctx, w.sess.ttl/2)
	defer cancel()
	resp, err := w.c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", w.sess.id)).
		Then(put).
		Else(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", 0)},
			[]clientv3.Op{put},
			[]clientv3.Op{clientv3.OpGet(key)})).Commit()
	if err != nil {
		w.c.m.etcdError("member")
		return fmt.Errorf("coordinator: write member key: %w", err)
	}
	if !resp.Succeeded {
		inner := resp.Responses[0].GetResponseTxn()
		if !inner.Succeeded {
			holder := int64(0)
			if kvs := inner.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
				holder = kvs[0].Lease
			}
			return fmt.Errorf("%w: lease %x", errMemberIDTaken, holder)
		}
		w.c.log.Warn("member key was deleted or overwritten by hand; registered again")
	}
	return nil
}

// errMemberIDTaken: members/<self> is held by another lease.
var errMemberIDTaken = errors.New("coordinator: member key held by another session")

// memberTrouble ends the session when another one holds the member ID;
// any other error is logged, and the write is tried again (memberPending).
func (w *worker) memberTrouble(err error) {
	if errors.Is(err, errMemberIDTaken) {
		w.c.log.Error("member key taken by another session; starting a new session", "error", err)
		w.sess.markAtRisk(err)
		return
	}
	w.memberPending.Store(true)
	w.c.log.Warn("updating the member key failed, retrying", "error", err)
}

// showDrain records whether the member key says draining, and wakes Drain.
func (w *worker) showDrain(draining bool) {
	if draining && !w.drainShown.Swap(true) {
		w.c.notify()
	}
}

// othersCanTakeOver reports whether another live, non-draining member is
// registered.
func (c *Coordinator) othersCanTakeOver(ctx context.Context) (bool, error) {
	resp, err := c.cli.Get(ctx, c.keys.Members(), clientv3.WithPrefix())
	if err != nil {
		return false, err
	}
	for _, kv := range resp.Kvs {
		id, ok := keys.ID(c.keys.Members(), string(kv.Key))
		if !ok || id == c.o.memberID || kv.Lease == 0 {
			continue // a key without a lease is no live member
		}
		if m, err := decodeMember(id, kv.Value); err == nil && !m.Draining {
			return true, nil
		}
	}
	return false, nil
}

// The drain request. Admin.Drain asks a member to drain by rewriting the
// member's record with draining set and the drainRequest field added,
// keeping every other field (a newer member may write fields this code
// does not know). The member answers by writing its record itself, with
// draining set and without the request (keepMember); Admin.Drain waits for
// that answer, so a request lost with a record the lease took away is
// asked again on the member's next record.

// drainRequest is the field Admin.Drain adds to a member record: the member
// answers by writing its record itself, without it (see worker.keepMember).
const drainRequest = "drain_requested"

// drainState is what a member record says about a drain request.
type drainState int

const (
	drainNotAsked drainState = iota // not draining, not asked
	drainAsked                      // asked; the member has not answered yet
	drainAnswered                   // the member itself says it drains
)

// readDrain reads the drain state of a member record.
func readDrain(value []byte) (drainState, error) {
	rec, err := memberFields(value)
	if err != nil {
		return drainNotAsked, err
	}
	switch {
	case string(rec[drainRequest]) == "true":
		return drainAsked, nil
	case string(rec["draining"]) == "true":
		return drainAnswered, nil
	}
	return drainNotAsked, nil
}

// askDrain returns the member record value with the drain asked for.
func askDrain(value []byte) ([]byte, error) {
	rec, err := memberFields(value)
	if err != nil {
		return nil, err
	}
	rec["draining"] = json.RawMessage("true")
	rec[drainRequest] = json.RawMessage("true")
	return json.Marshal(rec)
}

// drainRequested reports whether a member record carries Admin.Drain's
// request, which the member answers by writing its record itself.
func drainRequested(value []byte) bool {
	rec, err := memberFields(value)
	return err == nil && string(rec[drainRequest]) == "true"
}

// memberFields decodes a member record into its fields, keeping any the
// code does not know.
func memberFields(value []byte) (map[string]json.RawMessage, error) {
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errors.New("null")
	}
	return rec, nil
}
