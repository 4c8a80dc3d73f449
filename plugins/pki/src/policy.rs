//! Which names a role allows: Vault's rules for `allowed_domains`, bare domains,
//! subdomains, globs, localhost, wildcards and hostname syntax. Pure and unit-tested.

/// The name rules of a role.
#[derive(Clone, Debug, Default)]
pub struct NamePolicy {
    /// `allowed_domains`, lower-cased.
    pub allowed_domains: Vec<String>,
    /// Effective `allow_bare_domains`.
    pub allow_bare_domains: bool,
    /// `allow_subdomains`.
    pub allow_subdomains: bool,
    /// `allow_glob_domains`.
    pub allow_glob_domains: bool,
    /// `allow_localhost`.
    pub allow_localhost: bool,
    /// `allow_any_name`.
    pub allow_any_name: bool,
    /// `enforce_hostnames`.
    pub enforce_hostnames: bool,
    /// `allow_wildcard_certificates`.
    pub allow_wildcard_certificates: bool,
}

/// Whether `name` is a syntactically valid DNS name (optionally with a leading `*.`).
pub fn is_hostname(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl NamePolicy {
    /// Whether the role allows `name` as a common name or DNS SAN.
    pub fn allows(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if name.starts_with("*.") && !self.allow_wildcard_certificates {
            return false;
        }
        if self.enforce_hostnames && !name.contains('@') && !is_hostname(&name) {
            return false;
        }
        if self.allow_any_name {
            return true;
        }
        if self.allow_localhost
            && (name == "localhost"
                || name == "localdomain"
                || (self.allow_wildcard_certificates && name == "*.localhost"))
        {
            return true;
        }
        let host = name
            .rsplit_once('@')
            .map_or(name.as_str(), |(_, domain)| domain);
        self.allowed_domains.iter().any(|domain| {
            (self.allow_bare_domains && host == domain)
                || (self.allow_subdomains
                    && host.len() > domain.len()
                    && host.ends_with(&format!(".{domain}")))
                || (self.allow_glob_domains
                    && domain.contains('*')
                    && coffer_sdk::glob(domain, host))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tutorial() -> NamePolicy {
        NamePolicy {
            allowed_domains: vec![
                "grade-api.svc.cluster.local".into(),
                "grade-api.grade-api.svc.cluster.local".into(),
            ],
            allow_bare_domains: true,
            allow_subdomains: true,
            allow_localhost: false,
            enforce_hostnames: true,
            allow_wildcard_certificates: true,
            ..NamePolicy::default()
        }
    }

    #[test]
    fn the_tutorial_role_allows_its_names_and_nothing_else() {
        let role = tutorial();
        assert!(role.allows("grade-api.grade-api.svc.cluster.local"));
        assert!(
            role.allows("grade-api.svc.cluster.local"),
            "a listed domain is itself allowed (Coffer default)"
        );
        assert!(role.allows("pod-1.grade-api.svc.cluster.local"));
        assert!(role.allows("*.grade-api.svc.cluster.local"));
        assert!(!role.allows("localhost"));
        assert!(!role.allows("evil.example.com"));
        assert!(
            !role.allows("xgrade-api.svc.cluster.local"),
            "suffix must be a whole label"
        );
        assert!(
            !role.allows("bad_name.grade-api.svc.cluster.local"),
            "enforce_hostnames"
        );
    }

    #[test]
    fn explicit_vault_settings_get_vault_behaviour() {
        let mut role = tutorial();
        role.allow_bare_domains = false;
        assert!(!role.allows("grade-api.svc.cluster.local"));
        role.allow_subdomains = false;
        assert!(!role.allows("pod-1.grade-api.svc.cluster.local"));
        role.allow_localhost = true;
        assert!(role.allows("localhost"));
        let globbed = NamePolicy {
            allowed_domains: vec!["*.example.com".into()],
            allow_glob_domains: true,
            ..NamePolicy::default()
        };
        assert!(globbed.allows("a.b.example.com"));
        let any = NamePolicy {
            allow_any_name: true,
            enforce_hostnames: true,
            ..NamePolicy::default()
        };
        assert!(any.allows("anything.test"));
        assert!(!any.allows("not a hostname"));
        let no_wildcards = NamePolicy {
            allow_wildcard_certificates: false,
            ..tutorial()
        };
        assert!(!no_wildcards.allows("*.grade-api.svc.cluster.local"));
    }
}
