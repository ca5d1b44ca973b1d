// Package certs is jobsuite's private PKI: it creates a certificate
// authority, issues certificates that carry a role, loads them, and builds
// the mutual-TLS configurations used by the controller, the agents and the
// CLI. It holds no state beyond the PEM files it writes.
//
// # Roles in certificates
//
// Every certificate names who its holder is and what it may do. The
// encoding is in the subject:
//
//	Subject.Organization       = ["jobsuite"]
//	Subject.OrganizationalUnit = [role]   // controller | agent | operator | viewer
//	Subject.CommonName         = name     // [A-Za-z0-9._-], 1 to 64 characters
//
// [RoleOf] reads the role back and refuses a certificate with any other
// organization, no role, several roles or an unknown role ([ErrNoRole]).
// No URI SAN is used. The CA certificate (CommonName "jobsuite CA",
// Organization "jobsuite") carries no role.
//
// Extended key usage and subject alternative names follow the role:
//
//   - controller: ServerAuth and ClientAuth. SANs are the requested DNS names
//     and IPs, always "localhost", 127.0.0.1 and ::1, and the name itself,
//     as a DNS SAN when it is a valid hostname or as an IP SAN when it is
//     an IP address.
//   - agent, operator, viewer: ClientAuth only, plus the requested DNS/IP
//     SANs if any.
//
// All keys are ECDSA P-256, stored as PKCS #8 ("PRIVATE KEY" PEM blocks).
// Serial numbers are random 128-bit numbers. NotBefore is one minute in the
// past to absorb clock skew.
//
// # Validity defaults
//
//   - CA: 10 years.
//   - Issued certificates: [DefaultTTL] (1 year) when Request.TTL is 0, at
//     most [MaxTTL] (825 days), and never past the CA's own NotAfter (the
//     validity is cut to the CA's expiry).
//
// # PKI directory layout
//
// [CreateCA] and [IssueFiles] work on one directory, created with mode 0700
// if it does not exist:
//
//	<dir>/ca.pem           CA certificate          (0644) — give to everyone
//	<dir>/ca-key.pem       CA private key          (0600) — keep offline if you can
//	<dir>/<name>.pem       certificate for <name>  (0644)
//	<dir>/<name>-key.pem   private key for <name>  (0600)
//
// Existing files are never overwritten: both functions return [ErrExists]
// instead. The name "ca" is reserved for the CA.
//
// # TLS configurations
//
// [ServerTLS] and [ClientTLS] require TLS 1.3 and verify the peer against
// the jobsuite CA in both directions. ClientTLS also refuses a server that
// is not a controller. What a verified peer may do is decided by the
// caller from [PeerIdentity].
package certs
