package simetcd

import (
	_ "unsafe" // for go:linkname

	_ "go.etcd.io/etcd/client/v3" // holds valCtxCh
)

// clientv3's watcher derives each watch stream's context from a valCtx whose
// Done is a package-level channel made at init, which never closes. A
// context.WithCancel on it starts a goroutine that waits on that channel,
// and a synctest bubble cannot wait durably on a channel made outside it:
// virtual time would never advance while a watch is open. A nil channel
// never closes either, and context.WithCancel starts no goroutine for a
// parent whose Done is nil, so simetcd sets it to nil. No other code of
// clientv3 reads it (checked for v3.7.3; TestWatchInsideABubble fails if
// that changes).
//
//go:linkname valCtxCh go.etcd.io/etcd/client/v3.valCtxCh
var valCtxCh chan struct{}

func init() { valCtxCh = nil }
