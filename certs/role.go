package certs

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// Role is what a certificate's holder is allowed to be. It is stored as the
// certificate's single Subject.OrganizationalUnit.
type Role string

// The roles a jobsuite certificate can carry.
const (
	RoleController Role = "controller" // serves the agent protocol and the HTTP API
	RoleAgent      Role = "agent"      // a worker: registers, pulls and runs jobs
	RoleOperator   Role = "operator"   // a person or tool that submits and cancels jobs
	RoleViewer     Role = "viewer"     // read-only access to jobs, logs and agents
)

// organization is the Subject.Organization of every jobsuite certificate.
const organization = "jobsuite"

// roles lists the valid roles in the order they are shown to users.
var roles = []Role{RoleController, RoleAgent, RoleOperator, RoleViewer}

func (r Role) valid() bool {
	for _, v := range roles {
		if r == v {
			return true
		}
	}
	return false
}

func roleList() string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// ParseRole parses a role name, ignoring case and surrounding space. An
// unknown name yields an error wrapping ErrInvalidRole that lists the valid
// roles.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !r.valid() {
		return "", fmt.Errorf("certs: %w %q: valid roles are %s", ErrInvalidRole, s, roleList())
	}
	return r, nil
}

// RoleOf returns the role carried by cert: its Organization must be
// exactly ["jobsuite"] and its OrganizationalUnit exactly one known role.
// Anything else yields an error wrapping ErrNoRole.
func RoleOf(cert *x509.Certificate) (Role, error) {
	if cert == nil {
		return "", fmt.Errorf("certs: %w: nil certificate", ErrNoRole)
	}
	sub := cert.Subject
	if len(sub.Organization) != 1 || sub.Organization[0] != organization {
		return "", fmt.Errorf("certs: certificate %q: %w: organization is %q, want [%q]",
			sub.CommonName, ErrNoRole, sub.Organization, organization)
	}
	if len(sub.OrganizationalUnit) != 1 {
		return "", fmt.Errorf("certs: certificate %q: %w: want exactly one organizational unit, have %q",
			sub.CommonName, ErrNoRole, sub.OrganizationalUnit)
	}
	r := Role(sub.OrganizationalUnit[0])
	if !r.valid() {
		return "", fmt.Errorf("certs: certificate %q: %w: unknown role %q (valid roles are %s)",
			sub.CommonName, ErrNoRole, sub.OrganizationalUnit[0], roleList())
	}
	return r, nil
}
