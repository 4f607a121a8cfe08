package assignment

import "errors"

var (
	// ErrNotOwner is returned by fenced operations once the claim no longer
	// holds the sync (released, expired, or taken over by another member).
	ErrNotOwner = errors.New("assignment: not the owner")
	// ErrInvalidID is wrapped by every error about an ID that is not 1–128
	// bytes of [A-Za-z0-9._:-].
	ErrInvalidID = errors.New("assignment: invalid ID")
)
