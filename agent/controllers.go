package agent

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"jobsuite/protocol"
)

// ParseControllers splits a -controller value, one host:port or several
// separated by commas ("a:7443,b:7443"), into its addresses, in order
// and without repeats. Blanks around an address are ignored.
func ParseControllers(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("controller address %q: %v; want host:port", a, err)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no controller address; want host:port, or several separated by commas")
	}
	return out, nil
}

// maxRedirects is how many Redirects with a leader the agent follows in
// a row, each at once, before it treats the next one as a failed try
// and backs off: controllers that disagree about the leader (one
// freshly deposed, one not yet told) must not keep it dialling in a
// tight loop.
const maxRedirects = 3

// maxLearned bounds the addresses an agent learns from controllers: a
// cluster has 3 or 5; a controller that sends hundreds is broken.
const maxLearned = 16

// controllers is the list of controller addresses the agent dials and
// where it stands in it; connectLoop owns it (the mutex is for readers
// such as tests and logs). The list is the configured addresses, in
// their order and always kept, then the ones learned from controllers
// (Welcome.Members, Redirect), which the leader's Welcome replaces.
//
// The agent dials the addresses in turn. A failed try (a dial that
// fails, a controller that refuses the session, one that knows no
// leader) moves on to the next address; a round is over when every
// address has failed since the last welcome or the last round, and only
// a whole failed round grows the backoff. A Redirect naming a leader is followed at once and is not
// a failure, up to maxRedirects in a row. A session the controller
// welcomed starts the backoff over when it ends, and the agent moves on
// to the next address.
type controllers struct {
	mu         sync.Mutex
	configured []string
	learned    []string
	at         int             // index in list() of the address to dial next
	failed     map[string]bool // the addresses whose tries failed in the current round
	rounds     int             // whole rounds failed since the last welcome: the backoff's exponent
	redirects  int             // redirects followed in a row since the last welcome
}

func newControllers(configured []string) *controllers {
	return &controllers{configured: slices.Clone(configured)}
}

// list returns every address, configured ones first.
func (c *controllers) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listLocked()
}

func (c *controllers) listLocked() []string {
	return append(slices.Clone(c.configured), c.learned...)
}

// learnedList returns the learnt addresses.
func (c *controllers) learnedList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.learned)
}

// next is the address to dial now.
func (c *controllers) next() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.listLocked()
	return l[c.at%len(l)]
}

// learn adds the addresses of controllers the agent was told about. With
// replace (the leader's Welcome.Members) they replace what was learned
// before; else (a Redirect) they are added. Configured addresses stay,
// and the address to dial next stays the same.
func (c *controllers) learn(addrs []string, replace bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.listLocked()
	cur := l[c.at%len(l)]
	var learned []string
	if !replace {
		learned = slices.Clone(c.learned)
	}
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" || slices.Contains(c.configured, a) || slices.Contains(learned, a) || len(learned) >= maxLearned {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			continue
		}
		learned = append(learned, a)
	}
	c.learned = learned
	c.at = max(slices.Index(c.listLocked(), cur), 0)
}

// pause is how long connectLoop waits before its next try.
type pause struct {
	kind pauseKind
	n    int // for pauseBackoff: the backoff step, 1 the shortest
	// roundFailed says a whole round over the addresses failed: no
	// controller welcomed the agent.
	roundFailed bool
}

type pauseKind int

const (
	pauseNone     pauseKind = iota // dial the next address at once
	pauseNoLeader                  // a short wait: an election is under way
	pauseBackoff                   // the exponential backoff, step n
)

// tryResult is how one try (a dial and, if it got that far, a session)
// ended.
type tryResult struct {
	addr     string
	welcomed bool               // the controller welcomed the agent before the session ended
	redirect *protocol.Redirect // the controller sent the agent elsewhere
}

// done records how a try ended, moves to the address to dial next and
// says how long to wait before dialling it.
func (c *controllers) done(r tryResult) pause {
	if rd := r.redirect; rd != nil {
		c.learn(append(slices.Clone(rd.Members), rd.Leader), false)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.listLocked()
	if r.welcomed {
		c.failed, c.rounds, c.redirects = nil, 0, 0
	}
	if rd := r.redirect; rd != nil && rd.Leader != "" {
		if i := slices.Index(l, strings.TrimSpace(rd.Leader)); i >= 0 && c.redirects < maxRedirects {
			c.redirects++
			c.at = i
			return pause{kind: pauseNone}
		}
		// A redirect loop (or a leader address not worth dialling): a
		// failed try that ends the round.
		c.redirects = 0
		c.advanceLocked(l, r.addr)
		c.failed, c.rounds = nil, c.rounds+1
		return pause{kind: pauseBackoff, n: c.rounds, roundFailed: !r.welcomed}
	}
	c.advanceLocked(l, r.addr)
	kind := pauseNone
	if r.redirect != nil {
		kind = pauseNoLeader
	}
	if r.welcomed {
		if kind == pauseNone {
			return pause{kind: pauseBackoff, n: 1} // as after any session: the shortest backoff
		}
		return pause{kind: kind}
	}
	if c.failed == nil {
		c.failed = map[string]bool{}
	}
	c.failed[r.addr] = true
	for _, a := range l {
		if !c.failed[a] {
			return pause{kind: kind}
		}
	}
	c.failed, c.rounds = nil, c.rounds+1
	return pause{kind: pauseBackoff, n: c.rounds, roundFailed: true}
}

// advanceLocked moves to the address after addr.
func (c *controllers) advanceLocked(l []string, addr string) {
	i := slices.Index(l, addr)
	if i < 0 {
		i = c.at
	}
	c.at = (i + 1) % len(l)
}
