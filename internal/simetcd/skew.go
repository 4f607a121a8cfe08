package simetcd

import (
	"time"

	"go.etcd.io/etcd/server/v3/lease"
)

// A member whose clock runs slow measures its lease's TTL too late: by the
// time its clock says TTL has passed since it sent a renewal, etcd's clock
// says more. Only that relation between the member's clock and etcd's
// matters to the lease (etcd keeps no other time for a client), so a Conn
// models a clock that runs slow by a fraction f by letting the leases it
// grants expire on the Server after TTL×(1−f) of its own time instead of
// TTL. The client's other timers keep true time, which changes nothing
// about who may own what.
//
// The lessor still holds each lease for its full TTL (TimeToLive answers
// as etcd would); the Server revokes a skewed lease earlier, with the same
// rules as the lessor: not while there is no leader, extended when a leader
// is regained, and a renewal that arrives after the early expiry finds the
// lease gone.

// early is the expiry of a lease granted through a slow-clock Conn.
type early struct {
	frac  float64 // of the TTL after which the lease expires
	at    time.Time
	timer *time.Timer
}

// SetClockSkew makes the leases granted through c from now on expire as if
// c's client ran a clock slow by slow (0.04 for 4 %): after TTL×(1−slow)
// on the Server's clock from their grant or last renewal, from whichever
// Conn the renewal comes. slow must be in [0, 0.5].
func (c *Conn) SetClockSkew(slow float64) {
	if slow < 0 || slow > 0.5 {
		panic("simetcd: SetClockSkew wants a fraction in [0, 0.5]")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slow = slow
}

func (c *Conn) clockSkew() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slow
}

// skew schedules the early expiry of a lease just granted with ttl
// seconds. s.mu is held.
func (s *Server) skew(id lease.LeaseID, ttl int64, slow float64) {
	if slow == 0 {
		return
	}
	e := &early{frac: 1 - slow}
	s.early[id] = e
	s.expireAfter(id, e, ttl)
}

// expireAfter (re)sets e to expire ttl×frac seconds from now. s.mu is held.
func (s *Server) expireAfter(id lease.LeaseID, e *early, ttl int64) {
	d := time.Duration(float64(time.Duration(ttl)*time.Second) * e.frac)
	e.at = time.Now().Add(d)
	if e.timer == nil {
		e.timer = time.AfterFunc(d, func() { s.expireEarly(id) })
		return
	}
	e.timer.Reset(d)
}

// expireEarly revokes a skewed lease whose early expiry has come.
func (s *Server) expireEarly(id lease.LeaseID) {
	s.expiring.RLock() // until OnExpire returned: Close waits for it
	defer s.expiring.RUnlock()
	if s.lock() != nil {
		return
	}
	revoked := s.revokeIfDue(id)
	s.mu.Unlock()
	if revoked && s.cfg.OnExpire != nil {
		s.cfg.OnExpire(int64(id))
	}
}

// revokeIfDue revokes the lease if it is skewed and its early expiry has
// passed, and says whether it did. s.mu is held.
func (s *Server) revokeIfDue(id lease.LeaseID) bool {
	e := s.early[id]
	if e == nil || s.noLeader || time.Now().Before(e.at) {
		return false
	}
	s.forget(id)
	return s.le.Revoke(id) == nil
}

// renewed moves a skewed lease's early expiry after a renewal that gave
// ttl, and says whether the lease still exists. s.mu is held.
func (s *Server) renewed(id lease.LeaseID, ttl int64) bool {
	e := s.early[id]
	if e == nil {
		return true
	}
	if s.le.Lookup(id) == nil {
		s.forget(id)
		return false
	}
	s.expireAfter(id, e, ttl)
	return true
}

// extendEarly restarts every skewed lease's expiry, as Promote does the
// lessor's when a leader is regained. s.mu is held.
func (s *Server) extendEarly() {
	for id, e := range s.early {
		if l := s.le.Lookup(id); l != nil {
			s.expireAfter(id, e, l.TTL())
		} else {
			s.forget(id)
		}
	}
}

// forget drops a lease's early expiry. s.mu is held.
func (s *Server) forget(id lease.LeaseID) {
	if e := s.early[id]; e != nil {
		e.timer.Stop()
		delete(s.early, id)
	}
}
