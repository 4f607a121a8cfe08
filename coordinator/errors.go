package coordinator

import "errors"

var (
	// ErrMemberIDInUse is returned by Join when another live session holds
	// this member ID and does not give it up before Join's ctx ends.
	ErrMemberIDInUse = errors.New("coordinator: member ID in use")
	// ErrClosed is returned by calls made after the coordinator stopped.
	ErrClosed = errors.New("coordinator: stopped")
	// ErrNotJoined is returned by Drain and Leave before a successful Join.
	ErrNotJoined = errors.New("coordinator: not joined")
	// ErrAlreadyJoined is returned by a second Join.
	ErrAlreadyJoined = errors.New("coordinator: already joined")
	// ErrCalledFromCallback is returned by Drain and Leave when called from
	// inside a Handler callback, where waiting for revokes would deadlock.
	ErrCalledFromCallback = errors.New("coordinator: Drain and Leave must not be called from a handler callback")
	// ErrInvalidSpec wraps the reason a stored sync spec could not be read.
	ErrInvalidSpec = errors.New("coordinator: invalid sync spec")
)
