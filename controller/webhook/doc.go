// Package webhook delivers job notifications (issue 17): it signs a
// body, POSTs it to an operator-configured URL under a policy that keeps
// the controller from being turned against its own network (SSRF), and
// says whether a failed delivery is worth retrying.
//
// What a receiver gets:
//
//	POST <url>
//	Content-Type: application/json
//	User-Agent: jobsuite-webhook/1
//	Jobsuite-Delivery: <delivery ID, the same on every retry>
//	Jobsuite-Event: <event, e.g. job.finished>
//	Jobsuite-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// The signature covers the time stamp and the body, so a receiver that
// checks it (Verify, or the same four lines in any language) and refuses
// stamps older than a few minutes cannot be fed a replayed delivery;
// deliveries are at least once, so receivers dedupe by Jobsuite-Delivery.
// The scheme is Stripe's: receivers with a library for it can use it.
//
// Policy: only https:// unless AllowHTTP; only the hosts Hosts lists,
// if it lists any; the connection is refused
// when the address the name resolves to (checked on the dialled address,
// so DNS rebinding between check and connect does not help) is loopback,
// private, link-local (cloud metadata at 169.254.169.254), unspecified,
// multicast or otherwise not global unicast — unless it is inside an
// Allow prefix. Redirects are not followed (a redirect to an internal
// address would bypass the check; a receiver that moved gets the
// redirect reported as the failure). Answers are read up to 64 KiB.
package webhook
