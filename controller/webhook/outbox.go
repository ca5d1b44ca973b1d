package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"jobsuite/controller/clock"
	"jobsuite/controller/store"
)

// Outbox delivers the notifications waiting in the store's outbox, at
// least once each. An entry is written (store.PutDelivery) in the same
// round as the event it reports, so a notification exists exactly when
// its event is durable; the Outbox, which the controller runs where the
// scheduler runs (the leader), then POSTs it and records the end with
// commands: on success the entry goes and the job's history says so
// (store.AppendEvent); a failure worth retrying is stored back with its
// count, last error and next time; after MaxTries, or a final refusal,
// the entry goes and the history says why. A controller killed between
// a POST and its commit sends it again after the restart, with the same
// Jobsuite-Delivery ID, so receivers can tell.
type Outbox struct {
	// Send makes one delivery and returns the answer's status (0 for
	// none): Send with the policy's client and the signing secret, in
	// production.
	Send func(ctx context.Context, d store.Delivery) (int, error)
	// Do applies commands and waits until they are durable. Its error
	// is a failed commit (the controller stops); a command the store
	// refuses (an event for a job retention removed) is not one.
	Do func(cmds ...store.Command) error
	// Backoff is the wait before try tries+1 after tries failed ones.
	Backoff func(tries int) time.Duration
	// MaxTries is how many tries a delivery gets; 0: 8.
	MaxTries int
	// Parallel bounds the deliveries in flight; 0: 8.
	Parallel int
	// PerTarget bounds the deliveries in flight to one host (the URL's
	// host and port), so a slow receiver holds at most this many of
	// the Parallel slots; 0: 2.
	PerTarget int
	// Clock is the time tries are made and retries wait on.
	Clock clock.Clock
	Log   hclog.Logger

	mu      sync.Mutex
	waiting map[string]store.Delivery // by ID; not in flight
	wake    chan struct{}

	inFlight                   atomic.Int64
	delivered, retried, failed atomic.Uint64
}

// Stats are an Outbox's figures since it was made (for /metrics).
type Stats struct {
	Pending   int    // entries waiting or in flight (a retry being put back may count twice for an instant)
	Delivered uint64 // deliveries answered with success
	Retried   uint64 // tries that failed and were scheduled again
	Failed    uint64 // deliveries given up (out of tries, or refused for good)
}

// Stats returns the Outbox's figures now.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	waiting := len(o.waiting)
	o.mu.Unlock()
	return Stats{
		Pending:   waiting + int(o.inFlight.Load()),
		Delivered: o.delivered.Load(), Retried: o.retried.Load(), Failed: o.failed.Load(),
	}
}

// Add hands the Outbox entries to deliver: those Load found at start,
// and each new one once the round holding its PutDelivery is durable.
func (o *Outbox) Add(ds ...store.Delivery) {
	o.mu.Lock()
	if o.waiting == nil {
		o.waiting = map[string]store.Delivery{}
		o.wake = make(chan struct{}, 1)
	}
	for _, d := range ds {
		o.waiting[d.ID] = d
	}
	o.mu.Unlock()
	o.kick()
}

func (o *Outbox) kick() {
	o.mu.Lock()
	w := o.wake
	o.mu.Unlock()
	if w == nil {
		return
	}
	select {
	case w <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends (then it waits for the deliveries in
// flight) or a commit fails (the controller is stopping; the store keeps
// what is left).
func (o *Outbox) Run(ctx context.Context) error {
	o.Add() // make the maps
	maxTries, parallel, perTarget := o.MaxTries, o.Parallel, o.PerTarget
	if maxTries <= 0 {
		maxTries = 8
	}
	if parallel <= 0 {
		parallel = 8
	}
	if perTarget <= 0 {
		perTarget = 2
	}
	slots := make(chan struct{}, parallel)
	busy := map[string]int{} // deliveries in flight by target host; under o.mu
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		now := o.Clock.Now()
		var next time.Time
		o.mu.Lock()
		for _, d := range o.due(now) {
			host := targetOf(d.URL)
			if busy[host] >= perTarget {
				continue // a finished one kicks
			}
			select {
			case slots <- struct{}{}:
			default:
				continue // all slots busy: a finished one kicks
			}
			delete(o.waiting, d.ID)
			busy[host]++
			o.inFlight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					o.mu.Lock()
					busy[host]--
					o.inFlight.Add(-1)
					o.mu.Unlock()
					<-slots
					o.kick()
				}()
				if err := o.deliver(ctx, d, maxTries); err != nil {
					select {
					case failed <- err:
					default:
					}
				}
			}()
		}
		for _, d := range o.waiting {
			if d.NextTry.After(now) && (next.IsZero() || d.NextTry.Before(next)) {
				next = d.NextTry
			}
		}
		o.mu.Unlock()
		var timer clock.Timer
		var due <-chan time.Time
		if !next.IsZero() {
			timer = o.Clock.NewTimer(next.Sub(now))
			due = timer.C()
		}
		var err error
		select {
		case <-ctx.Done():
		case err = <-failed:
		case <-o.wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil || err != nil {
			return err
		}
	}
}

// due returns the waiting entries due at now, oldest first (the order
// they were made in). The caller holds o.mu.
func (o *Outbox) due(now time.Time) []store.Delivery {
	var out []store.Delivery
	for _, d := range o.waiting {
		if !d.NextTry.After(now) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b store.Delivery) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// targetOf is the host (and port) a delivery goes to: the unit of the
// per-target bound.
func targetOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

// tries writes a count of tries for the job's events.
func tries(n int) string {
	if n == 1 {
		return "1 try"
	}
	return fmt.Sprintf("%d tries", n)
}

// deliver makes one try of d and records its end.
func (o *Outbox) deliver(ctx context.Context, d store.Delivery, maxTries int) error {
	status, err := o.Send(ctx, d)
	if ctx.Err() != nil {
		o.Add(d) // stopping: the entry stays, to be tried after the restart
		return nil
	}
	d.Tries++
	now := o.Clock.Now()
	target := redactURL(d.URL)
	if err == nil {
		o.delivered.Add(1)
		o.Log.Debug("notification delivered", "job", d.Job, "event", d.Event, "url", target, "try", d.Tries)
		return o.Do(&store.DeleteDelivery{ID: d.ID}, &store.AppendEvent{Job: d.Job, Event: store.Event{
			Time: now, Type: "notified", Message: fmt.Sprintf("%s webhook to %s delivered (%d) after %s", d.Event, target, status, tries(d.Tries)),
		}})
	}
	var we *Error
	retry := errors.As(err, &we) && we.Retry
	if retry && d.Tries < maxTries {
		d.LastError, d.NextTry = err.Error(), now.Add(o.Backoff(d.Tries))
		o.Log.Info("notification failed; will try again", "job", d.Job, "url", target, "try", d.Tries, "next", d.NextTry, "error", err)
		if err := o.Do(&store.PutDelivery{Delivery: d}); err != nil {
			return err
		}
		o.retried.Add(1)
		o.Add(d)
		return nil
	}
	why := fmt.Sprintf("failed after %s: %v", tries(d.Tries), err)
	if !retry {
		why = fmt.Sprintf("failed after %s (not retried): %v", tries(d.Tries), err)
	}
	o.failed.Add(1)
	o.Log.Warn("notification given up", "job", d.Job, "url", target, "error", err)
	return o.Do(&store.DeleteDelivery{ID: d.ID}, &store.AppendEvent{Job: d.Job, Event: store.Event{
		Time: now, Type: "notify_failed", Message: fmt.Sprintf("%s webhook to %s %s", d.Event, target, why),
	}})
}

// redactURL drops a URL's query string (it may hold a receiver's token)
// for logs and events.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(bad URL)"
	}
	return redact(u)
}
