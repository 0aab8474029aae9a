package auth

import (
	"fmt"
	"slices"
	"strings"
)

// DefaultAdminClaim is JWT_ADMIN_CLAIM's default: a token is an admin's if
// its claim admin is true or its claim role is "admin" (what `orderd token
// --admin` writes, and what the service accepted before the claim became
// configurable).
const DefaultAdminClaim = "admin,role=admin"

// AdminClaim says which claims make a token an admin's. It is a list of
// rules, any one of which is enough; the zero value makes nobody an admin.
type AdminClaim struct {
	rules []adminRule
}

// adminRule is one rule of an AdminClaim.
type adminRule struct {
	name  string // the claim's name, or a dotted path into nested objects
	value string // "": the claim must be the JSON boolean true
}

// ParseAdminClaim parses JWT_ADMIN_CLAIM: comma-separated rules, any one of
// which makes an admin.
//
//   - name: the claim is the JSON boolean true (admin: true; not the string
//     "true").
//   - name=value: the claim is a string one of whose space-separated words
//     is value (roles: "admin", scope: "openid orders:admin"), or an array
//     with the string value among its elements (roles: ["admin"]).
//
// A name is looked up as a top-level claim first (so that a namespaced claim
// such as https://shop.example/roles works); if there is none and the name
// has dots, it is a path into nested objects (Keycloak's
// realm_access.roles=admin). Names and values are case-sensitive and may not
// contain spaces, commas or '='.
func ParseAdminClaim(s string) (AdminClaim, error) {
	var a AdminClaim
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		name, value, hasValue := strings.Cut(part, "=")
		switch {
		case name == "":
			return AdminClaim{}, fmt.Errorf("admin claim %q: a rule without a claim name (want name or name=value, comma-separated)", s)
		case hasValue && value == "":
			return AdminClaim{}, fmt.Errorf("admin claim %q: rule %q has no value after '='", s, part)
		case strings.ContainsAny(name, " \t") || strings.ContainsAny(value, " \t="):
			return AdminClaim{}, fmt.Errorf("admin claim %q: rule %q has a space or a second '='", s, part)
		}
		a.rules = append(a.rules, adminRule{name: name, value: value})
	}
	return a, nil
}

// String returns the rules in ParseAdminClaim's syntax.
func (a AdminClaim) String() string {
	parts := make([]string, len(a.rules))
	for i, r := range a.rules {
		parts[i] = r.name
		if r.value != "" {
			parts[i] += "=" + r.value
		}
	}
	return strings.Join(parts, ",")
}

// Match reports whether claims (a token's decoded payload) make an admin.
// A claim that a rule reads but that has the wrong type for it (admin:
// "true" for a rule that wants a boolean, roles: 1 for one that wants a
// string) is an error, so that the token is refused rather than quietly
// taken for a user's: the identity provider and the rule disagree.
func (a AdminClaim) Match(claims map[string]any) (bool, error) {
	admin := false
	for _, r := range a.rules {
		ok, err := r.match(lookup(claims, r.name))
		if err != nil {
			return false, err
		}
		admin = admin || ok
	}
	return admin, nil
}

func (r adminRule) match(claim any) (bool, error) {
	if claim == nil {
		return false, nil
	}
	if r.value == "" {
		b, ok := claim.(bool)
		if !ok {
			return false, fmt.Errorf("the claim %q must be a boolean", r.name)
		}
		return b, nil
	}
	switch c := claim.(type) {
	case string:
		return slices.Contains(strings.Fields(c), r.value), nil
	case []any:
		found := false
		for _, e := range c {
			s, ok := e.(string)
			if !ok {
				return false, fmt.Errorf("the claim %q must be a string or an array of strings", r.name)
			}
			found = found || s == r.value
		}
		return found, nil
	}
	return false, fmt.Errorf("the claim %q must be a string or an array of strings", r.name)
}

// lookup returns the claim called name, or else, if name has dots, the
// value at that path of nested objects; nil if there is none.
func lookup(claims map[string]any, name string) any {
	if v, ok := claims[name]; ok {
		return v
	}
	if !strings.Contains(name, ".") {
		return nil
	}
	var v any = claims
	for key := range strings.SplitSeq(name, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}
