package election

import "errors"

var (
	// ErrNoLeader is returned by [Election.Leader] when no candidate holds
	// the election.
	ErrNoLeader = errors.New("election: no leader")
	// ErrSessionDone is returned by [Election.Campaign], and is the cause of
	// a leadership context's end, when the session's lease is gone or no
	// longer kept alive.
	ErrSessionDone = errors.New("election: session done")
	// ErrLeaderKeyLost is the cause of a leadership context's end when the
	// leader key was deleted or replaced by someone other than
	// [Election.Resign].
	ErrLeaderKeyLost = errors.New("election: leader key lost")
	// ErrResigned is the cause of a leadership context's end after
	// [Election.Resign], and is returned by a [Election.Campaign] that
	// Resign interrupted.
	ErrResigned = errors.New("election: resigned")
	// ErrAlreadyCampaigning is returned by [Election.Campaign] while another
	// Campaign on the same Election is running or has won a leadership that
	// has not ended.
	ErrAlreadyCampaigning = errors.New("election: already campaigning or leading")
)
