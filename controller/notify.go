package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/julienschmidt/httprouter"

	"jobsuite/api"
	"jobsuite/controller/sched"
	"jobsuite/controller/store"
	"jobsuite/controller/webhook"
	"jobsuite/internal/backoff"
)

// Webhook notifications (issue 17). The scheduler asks the notifier,
// in the round of every start and end of a job, which deliveries to
// write to the outbox (sched.Notifier); once the round is durable the
// notifier hands them to the delivery worker (webhook.Outbox), which
// runs with the scheduler — on the leader in cluster mode, a Server per
// term — and records each outcome as a committed command. Targets are a
// job's own notify URLs (the job.finished event) and the controller's
// configured webhooks (the events each asks for).

// The events a Webhook may ask for: started, finished, or one terminal
// state (the job.finished deliveries of jobs that ended so).
const (
	hookStarted  = "started"
	hookFinished = "finished"
)

// hookEvents are the values Webhook.Events may hold.
var hookEvents = []string{hookStarted, hookFinished, string(store.Completed), string(store.Failed), string(store.Timeout), string(store.Cancelled)}

// maxNotify bounds a job's notify URLs.
const maxNotify = 8

// Webhook is a controller-wide webhook target (the config file's
// [[webhook]] tables, the -webhook flag).
type Webhook struct {
	// Name names the webhook in logs and in the outbox; default
	// "webhook-N" for the Nth.
	Name string
	URL  string
	// Events are the events it gets: "started", "finished" (every end)
	// or a terminal state ("failed": the ends in that state only).
	// Default: finished.
	Events []string
	// Secret is the key its deliveries are signed with (at least 16
	// bytes); never logged.
	Secret []byte
}

// String writes w without its secret.
func (w Webhook) String() string {
	return fmt.Sprintf("webhook %s to %s (%s)", w.Name, webhookURL(w.URL), strings.Join(w.Events, ","))
}

// GoString is String: %#v of a Config must not print a secret either.
func (w Webhook) GoString() string { return w.String() }

// webhookURL is u without its query string (which may hold a token).
func webhookURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// wants reports whether w asks for event about a job in state st.
func (w *Webhook) wants(event string, st store.State) bool {
	for _, e := range w.Events {
		switch {
		case e == hookStarted && event == sched.EventStarted:
			return true
		case e == hookFinished && event == sched.EventFinished:
			return true
		case event == sched.EventFinished && e == string(st):
			return true
		}
	}
	return false
}

// notifyPolicy is the policy every target is checked against, at
// submit and at each delivery.
func (c *Config) notifyPolicy() *webhook.Policy {
	return &webhook.Policy{AllowHTTP: c.NotifyAllowHTTP, Allow: c.NotifyAllow, Hosts: c.NotifyHosts, TLS: c.NotifyTLS}
}

// checkWebhooks names the unnamed webhooks, defaults their events and
// refuses a URL the policy refuses, a secret too short, an unknown
// event or a name used twice.
func (c *Config) checkWebhooks() error {
	p := c.notifyPolicy()
	seen := map[string]bool{}
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		if w.Name == "" {
			w.Name = fmt.Sprintf("webhook-%d", i+1)
		}
		if seen[w.Name] {
			return fmt.Errorf("%w: two webhooks are named %s", ErrConfig, w.Name)
		}
		seen[w.Name] = true
		if _, err := p.CheckURL(w.URL); err != nil {
			return fmt.Errorf("%w: webhook %s: %v", ErrConfig, w.Name, err)
		}
		if len(w.Secret) < 16 {
			return fmt.Errorf("%w: webhook %s: its secret has %d bytes; give at least 16 (secret_file or secret_env)", ErrConfig, w.Name, len(w.Secret))
		}
		if len(w.Events) == 0 {
			w.Events = []string{hookFinished}
		}
		for _, e := range w.Events {
			if !slices.Contains(hookEvents, e) {
				return fmt.Errorf("%w: webhook %s: unknown event %q (known: %s)", ErrConfig, w.Name, e, strings.Join(hookEvents, ", "))
			}
		}
	}
	return nil
}

// checkNotify validates a job's notify URLs against the policy.
func checkNotify(urls []string, p *webhook.Policy) error {
	if len(urls) > maxNotify {
		return badField("notify", "names %d URLs; the limit is %d", len(urls), maxNotify)
	}
	for i, u := range urls {
		if _, err := p.CheckURL(u); err != nil {
			return badField("notify", "%v", err)
		}
		if slices.Contains(urls[:i], u) {
			return badField("notify", "names %s twice", webhookURL(u))
		}
	}
	return nil
}

// notifier is the scheduler's Notifier and the delivery worker's
// sender.
type notifier struct {
	hooks  []Webhook
	policy *webhook.Policy
	client *http.Client
	clock  func() time.Time
	log    hclog.Logger
	outbox *webhook.Outbox

	mu     sync.Mutex
	secret []byte // the key of the jobs' own notify URLs; nil until loaded (run)
}

func newNotifier(cfg Config, now func() time.Time, log hclog.Logger) *notifier {
	p := cfg.notifyPolicy()
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	p.Timeout = timeout
	return &notifier{hooks: cfg.Webhooks, policy: p, client: p.Client(), clock: now, log: log}
}

// Deliveries is sched.Notifier's: one entry per target that wants the
// event, each with its own ID and body. Called under the scheduler's
// lock: no I/O.
func (n *notifier) Deliveries(j *store.Job, event string, now time.Time) []store.Delivery {
	type target struct{ url, hook string }
	var targets []target
	if event == sched.EventFinished {
		for _, u := range j.Notify() {
			targets = append(targets, target{url: u})
		}
	}
	for i := range n.hooks {
		if h := &n.hooks[i]; h.wants(event, j.State) {
			targets = append(targets, target{url: h.URL, hook: h.Name})
		}
	}
	if len(targets) == 0 {
		return nil
	}
	body := api.Notification{Event: event, Time: now.UTC(), Job: notificationJob(j)}
	short := strings.TrimPrefix(event, "job.")
	out := make([]store.Delivery, 0, len(targets))
	for i, t := range targets {
		// Unique however the job's ID came (IDs of pruned jobs can
		// return): the job, the event, the attempt, the target and the
		// time.
		body.ID = fmt.Sprintf("%d-%s-%d-%d-%x", j.ID, short, len(j.Attempts), i, now.UnixNano())
		b, err := json.Marshal(&body)
		if err != nil {
			n.log.Error("notification not written", "job", j.ID, "error", err)
			continue
		}
		out = append(out, store.Delivery{ID: body.ID, Job: j.ID, Event: event, URL: t.url, Hook: t.hook, Body: b, NextTry: now, CreatedAt: now})
	}
	return out
}

// notificationJob is what a Notification says of j.
func notificationJob(j *store.Job) api.NotificationJob {
	v := api.NotificationJob{
		JobID: j.ID, Name: j.Name, Status: string(j.State), Reason: j.Reason, Attempt: len(j.Attempts),
		Labels: j.Labels, Schedule: j.Schedule(), CreatedAt: j.CreatedAt,
		StartedAt: timePtr(j.StartedAt), FinishedAt: timePtr(j.FinishedAt),
	}
	if a := j.Current(); a != nil {
		v.Agent, v.ExitCode, v.Signal = a.Agent, a.ExitCode, a.Signal
	}
	if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		d := j.FinishedAt.Sub(j.StartedAt).Seconds()
		v.Duration = &d
	}
	return v
}

// Queued is sched.Notifier's: the entries' round is durable.
func (n *notifier) Queued(ds ...store.Delivery) { n.outbox.Add(ds...) }

// send makes one delivery, signed with its webhook's secret or, for a
// job's own URL, the controller's notify secret.
func (n *notifier) send(ctx context.Context, d store.Delivery) (int, error) {
	var secret []byte
	if d.Hook == "" {
		n.mu.Lock()
		secret = n.secret
		n.mu.Unlock()
	} else {
		for _, h := range n.hooks {
			if h.Name == d.Hook {
				secret = h.Secret
			}
		}
		if secret == nil {
			return 0, &webhook.Error{Msg: "webhook " + d.Hook + " is no longer configured"}
		}
	}
	return webhook.Send(ctx, n.client, n.policy, webhook.Delivery{ID: d.ID, Event: d.Event, URL: d.URL, Body: d.Body, Secret: secret}, n.clock())
}

// outboxStats are the webhook outbox's figures for /metrics.
func (s *Server) outboxStats() webhook.Stats {
	if s.notify == nil || s.notify.outbox == nil {
		return webhook.Stats{}
	}
	return s.notify.outbox.Stats()
}

// newOutbox makes s's delivery worker.
func (s *Server) newOutbox(n *notifier) *webhook.Outbox {
	p := backoff.Policy{Base: s.cfg.NotifyRetryBase, Max: s.cfg.NotifyRetryMax, Down: 0.2, Up: 0.2}
	return &webhook.Outbox{
		Send: n.send,
		Do: func(cmds ...store.Command) error {
			// A command the store refuses (an event for a job pruned,
			// or not finished yet) is not a failure: its Result says so.
			b, first := s.c.AddAll(cmds...)
			if err := b.Wait(); err != nil {
				return err
			}
			// An event that met its job changed in the same round (two
			// deliveries of one job recorded together) is appended in
			// a round of its own.
			res := b.Results()
			for k, cmd := range cmds {
				ev, ok := cmd.(*store.AppendEvent)
				if !ok || first+k >= len(res) || !errors.Is(res[first+k].Err, store.ErrSameRound) {
					continue
				}
				for range 3 {
					r, err := s.c.Do(ev)
					if err != nil {
						return err
					}
					if !errors.Is(r.Err, store.ErrSameRound) {
						break
					}
				}
			}
			return nil
		},
		Backoff:  func(tries int) time.Duration { return p.Delay(tries, s.notifyJitter()) },
		MaxTries: s.cfg.NotifyMaxTries,
		Clock:    s.clock,
		Log:      s.log.Named("webhook"),
	}
}

// notifyJitter spreads retries (math/rand/v2 would do; crypto/rand
// keeps one import of randomness in this file).
func (s *Server) notifyJitter() float64 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return float64(uint16(b[0])<<8|uint16(b[1])) / 65536
}

// runNotify runs the delivery worker until ctx ends: it makes sure the
// notify secret exists (the first term or start that needs one commits
// it), hands the worker the outbox the store holds and runs it.
func (s *Server) runNotify(ctx context.Context) {
	secret, err := s.notifySecret(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("webhook notifications stopped: no notify secret", "error", err)
		}
		return
	}
	s.notify.mu.Lock()
	s.notify.secret = secret
	s.notify.mu.Unlock()
	ds, err := s.st.Deliveries()
	if err != nil {
		s.log.Error("webhook notifications stopped: reading the outbox", "error", err)
		return
	}
	if len(ds) > 0 {
		s.log.Info("webhook outbox loaded", "deliveries", len(ds))
	}
	s.notify.outbox.Add(ds...)
	if err := s.notify.outbox.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("webhook notifications stopped", "error", err)
	}
}

// notifySecret returns the key jobs' own notify URLs are signed with,
// committing a new one if the store has none.
func (s *Server) notifySecret(ctx context.Context) ([]byte, error) {
	secret, err := s.st.NotifySecret()
	if err != nil || secret != nil {
		return secret, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	// Not waited for past ctx: a Server stopping before its first
	// round commits (a store below its disk floor) must not hang here.
	res, err := s.c.DoContext(ctx, &store.SetNotifySecret{Secret: []byte(hex.EncodeToString(b))})
	if err != nil {
		return nil, err
	}
	return res.Secret, res.Err
}

// handleNotifySecret answers GET /webhooks/secret: the key receivers of
// jobs' notify URLs verify signatures with.
func (s *Server) handleNotifySecret(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	secret, err := s.notifySecret(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "no notify secret: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, api.NotifySecretView{Secret: string(secret)})
}
