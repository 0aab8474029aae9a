package auth

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseAdminClaim(t *testing.T) {
	for in, want := range map[string]string{
		DefaultAdminClaim:                    "admin,role=admin",
		"admin":                              "admin",
		" roles=admin , scope=orders:admin ": "roles=admin,scope=orders:admin",
		"https://shop.example/roles=admin":   "https://shop.example/roles=admin",
		"realm_access.roles=admin":           "realm_access.roles=admin",
	} {
		a, err := ParseAdminClaim(in)
		if err != nil || a.String() != want {
			t.Errorf("ParseAdminClaim(%q) = %q, %v; want %q", in, a, err, want)
		}
	}
	for in, why := range map[string]string{
		"":                    "without a claim name",
		"admin,":              "without a claim name",
		"=admin":              "without a claim name",
		"roles=":              "no value",
		"roles=a=b":           "second '='",
		"scope=orders admin":  "a space",
		"my claim=admin":      "a space",
		"admin,,role=admin":   "without a claim name",
		"roles=admin,scope= ": "no value",
	} {
		if _, err := ParseAdminClaim(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseAdminClaim(%q) = %v, want an error saying %q", in, err, why)
		}
	}
}

func TestAdminClaimMatch(t *testing.T) {
	const malformed = "malformed"
	tests := []struct {
		rule, claims string
		want         any // true, false or malformed
	}{
		{DefaultAdminClaim, `{"admin":true}`, true},
		{DefaultAdminClaim, `{"role":"admin"}`, true},
		{DefaultAdminClaim, `{"admin":false,"role":"superuser"}`, false},
		{DefaultAdminClaim, `{"admin":"true"}`, malformed},
		{DefaultAdminClaim, `{"roles":["admin"]}`, false},
		{"admin", `{"admin":true}`, true},
		{"admin", `{"admin":1}`, malformed},
		{"admin", `{"role":"admin"}`, false},
		{"roles=admin", `{"roles":["buyer","admin"]}`, true},
		{"roles=admin", `{"roles":"admin"}`, true},
		{"roles=admin", `{"roles":["buyer"]}`, false},
		{"roles=admin", `{"roles":["Admin","administrator"]}`, false},
		{"roles=admin", `{"roles":[["admin"],{"admin":true}]}`, malformed},
		{"roles=admin", `{"roles":true}`, malformed},
		{"scope=orders:admin", `{"scope":"openid profile orders:admin"}`, true},
		{"scope=orders:admin", `{"scope":"openid orders:admin:read orders"}`, false},
		{"scope=orders:admin", `{"scope":"orders:admin"}`, true},
		{"scope=orders:admin", `{}`, false},
		{"realm_access.roles=admin", `{"realm_access":{"roles":["offline_access","admin"]}}`, true},
		{"realm_access.roles=admin", `{"realm_access":{"roles":["offline_access"]}}`, false},
		{"realm_access.roles=admin", `{"realm_access":["admin"]}`, false},
		{"https://shop.example/roles=admin", `{"https://shop.example/roles":["admin"]}`, true},
		{"groups=ops,roles=admin", `{"groups":["ops"]}`, true},
		{"groups=ops,roles=admin", `{"groups":["ops"],"roles":7}`, malformed},
		{DefaultAdminClaim, `{"admin":null,"role":null}`, false},
		{"realm_access.roles=admin", `{"realm_access":{"roles":"admin"}}`, true},
	}
	for _, tt := range tests {
		a, err := ParseAdminClaim(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		var claims map[string]any
		if err := json.Unmarshal([]byte(tt.claims), &claims); err != nil {
			t.Fatal(err)
		}
		var got any
		got, err = a.Match(claims)
		if err != nil {
			got = malformed
		}
		if got != tt.want {
			t.Errorf("%s on %s = %v (%v), want %v", tt.rule, tt.claims, got, err, tt.want)
		}
	}
}
