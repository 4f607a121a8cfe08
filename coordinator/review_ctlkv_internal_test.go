package coordinator

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ctlKV lets a test decide, per Txn, what happens to it: intercept gets
// the Txn's operations and a commit function that sends it (with any ctx:
// a Txn already on its way to etcd is applied whatever becomes of the
// sender's ctx), and returns what the caller sees. With no intercept, or
// when it returns handled false, the Txn commits as usual.
type ctlKV struct {
	clientv3.KV
	mu        sync.Mutex
	intercept func(tx *ctlTxn) (resp *clientv3.TxnResponse, err error, handled bool)
}

func (k *ctlKV) setIntercept(f func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool)) {
	k.mu.Lock()
	k.intercept = f
	k.mu.Unlock()
}

func (k *ctlKV) Txn(ctx context.Context) clientv3.Txn { return &ctlTxn{kv: k, ctx: ctx} }

type ctlTxn struct {
	kv        *ctlKV
	ctx       context.Context
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

func (t *ctlTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.cmps = append(t.cmps, cs...); return t }
func (t *ctlTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.then = append(t.then, ops...); return t }
func (t *ctlTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.els = append(t.els, ops...); return t }

// commit sends the Txn with ctx.
func (t *ctlTxn) commit(ctx context.Context) (*clientv3.TxnResponse, error) {
	return t.kv.KV.Txn(ctx).If(t.cmps...).Then(t.then...).Else(t.els...).Commit()
}

func (t *ctlTxn) Commit() (*clientv3.TxnResponse, error) {
	t.kv.mu.Lock()
	f := t.kv.intercept
	t.kv.mu.Unlock()
	if f != nil {
		if resp, err, handled := f(t); handled {
			return resp, err
		}
	}
	return t.commit(t.ctx)
}

// puts reports whether the Txn's Then puts key.
func (t *ctlTxn) puts(key string) bool {
	for _, op := range t.then {
		if op.IsPut() && string(op.KeyBytes()) == key {
			return true
		}
	}
	return false
}

// reads reports whether the Txn's Then reads key.
func (t *ctlTxn) reads(key string) bool { return readsKey(t.then, key) }

// claims reports whether the Txn holds a nested claim putting key.
func (t *ctlTxn) claims(key string) bool {
	for _, op := range t.then {
		if !op.IsTxn() {
			continue
		}
		_, then, _ := op.Txn()
		for _, o := range then {
			if o.IsPut() && string(o.KeyBytes()) == key {
				return true
			}
		}
	}
	return false
}
