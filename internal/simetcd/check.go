package simetcd

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The checks etcd's gRPC layer makes before a request reaches raft.

func checkRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkPut(r *pb.PutRequest) error {
	switch {
	case len(r.Key) == 0:
		return rpctypes.ErrGRPCEmptyKey
	case r.IgnoreValue && len(r.Value) != 0:
		return rpctypes.ErrGRPCValueProvided
	case r.IgnoreLease && r.Lease != 0:
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

// checkTxn counts a Txn's ops as etcd does: the longest of its compares,
// then and else lists, with each nested Txn checked against what is left.
func checkTxn(r *pb.TxnRequest, maxOps int) error {
	n := max(len(r.Compare), len(r.Success), len(r.Failure))
	if n > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if err := checkOp(op, maxOps-n); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkOp(op *pb.RequestOp, maxOps int) error {
	switch u := op.Request.(type) {
	case *pb.RequestOp_RequestRange:
		return checkRange(u.RequestRange)
	case *pb.RequestOp_RequestPut:
		return checkPut(u.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		if len(u.RequestDeleteRange.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
		return nil
	case *pb.RequestOp_RequestTxn:
		return checkTxn(u.RequestTxn, maxOps)
	}
	return rpctypes.ErrGRPCKeyNotFound
}

// span is a deleted key range [key, end), or the key alone when end is
// empty. Like etcd's check, it reads an end of "\x00" (a delete from key on)
// literally, as a range that holds nothing.
type span struct{ key, end string }

func (d span) holds(k string) bool {
	if d.end == "" {
		return k == d.key
	}
	return k >= d.key && k < d.end
}

func anyHolds(dels []span, k string) bool {
	for _, d := range dels {
		if d.holds(k) {
			return true
		}
	}
	return false
}

// checkOverlaps is etcd's rule for one list of a Txn's ops (then or else),
// nested Txns included: a key is put at most once, and never inside a range
// the same list deletes. A nested Txn's then and else may put the same key
// (only one of them runs). Nested lists are checked in order, each against
// the deletes of this level and of the nested lists before it, as etcd does.
func checkOverlaps(ops []*pb.RequestOp) (puts map[string]bool, dels []span, err error) {
	for _, op := range ops {
		if d, ok := op.Request.(*pb.RequestOp_RequestDeleteRange); ok && d.RequestDeleteRange != nil {
			dels = append(dels, span{string(d.RequestDeleteRange.Key), string(d.RequestDeleteRange.RangeEnd)})
		}
	}
	puts = map[string]bool{}
	for _, op := range ops {
		t, ok := op.Request.(*pb.RequestOp_RequestTxn)
		if !ok {
			continue
		}
		thenPuts, thenDels, err := checkOverlaps(t.RequestTxn.Success)
		if err != nil {
			return nil, nil, err
		}
		elsePuts, elseDels, err := checkOverlaps(t.RequestTxn.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range thenPuts {
			if puts[k] || anyHolds(dels, k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = true
		}
		for k := range elsePuts {
			if (puts[k] && !thenPuts[k]) || anyHolds(dels, k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = true
		}
		dels = append(dels, thenDels...)
		dels = append(dels, elseDels...)
	}
	for _, op := range ops {
		p, ok := op.Request.(*pb.RequestOp_RequestPut)
		if !ok || p.RequestPut == nil {
			continue
		}
		k := string(p.RequestPut.Key)
		if puts[k] || anyHolds(dels, k) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = true
	}
	return puts, dels, nil
}
