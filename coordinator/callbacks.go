package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/baton-go/baton/assignment"
)

// callbackKey marks the contexts given to callbacks, so Drain and Leave
// called from inside one fail instead of deadlocking, even from another
// goroutine the callback waits for.
type callbackKey struct{}

// enterCallbackGoroutine records that the calling goroutine runs callbacks
// until the returned function is called.
func (c *Coordinator) enterCallbackGoroutine() (leave func()) {
	id := goroutineID()
	c.cbMu.Lock()
	c.callbacks[id]++
	c.cbMu.Unlock()
	return func() {
		c.cbMu.Lock()
		if c.callbacks[id]--; c.callbacks[id] == 0 {
			delete(c.callbacks, id)
		}
		c.cbMu.Unlock()
	}
}

func (c *Coordinator) onCallbackGoroutine() bool {
	id := goroutineID()
	c.cbMu.Lock()
	defer c.cbMu.Unlock()
	return c.callbacks[id] > 0
}

// goroutineID returns the ID of the calling goroutine, read from the first
// line of its stack ("goroutine 123 [running]:"). Go offers no API for it
// on purpose; it is used here only to refuse Drain and Leave on a callback
// goroutine, which a ctx value cannot do when the callback passes another
// ctx. Goroutine IDs are never reused.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

func (c *Coordinator) callAssign(ctx context.Context, cl *assignment.Claim) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("coordinator: OnAssign of %q panicked: %v\n%s", cl.ID(), p, debug.Stack())
		}
		if err != nil {
			c.m.callbackError("assign")
		}
	}()
	ctx = context.WithValue(ctx, callbackKey{}, true)
	ctx = context.WithValue(ctx, callbackGoroutineKey{}, c.enterCallbackGoroutine)
	return c.h.OnAssign(ctx, cl)
}

func (c *Coordinator) callUpdate(ctx context.Context, cl *assignment.Claim) {
	defer func() {
		if p := recover(); p != nil {
			c.m.callbackError("update")
			c.log.Error("OnUpdate panicked", "sync", cl.ID(), "panic", p, "stack", string(debug.Stack()))
		}
	}()
	c.upd.OnUpdate(context.WithValue(ctx, callbackKey{}, true), cl)
}

func (c *Coordinator) callPrepare(ctx context.Context, s assignment.Sync) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("OnPrepare panicked", "sync", s.ID, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("coordinator: OnPrepare panicked: %v", p)
		}
	}()
	return c.prep.OnPrepare(context.WithValue(ctx, callbackKey{}, true), s)
}

func (c *Coordinator) callRevoke(ctx context.Context, cl *assignment.Claim, why assignment.RevokeReason) {
	defer func() {
		if p := recover(); p != nil {
			c.m.callbackError("revoke")
			c.log.Error("OnRevoke panicked", "sync", cl.ID(), "panic", p, "stack", string(debug.Stack()))
		}
	}()
	c.h.OnRevoke(context.WithValue(ctx, callbackKey{}, true), cl, why)
}
