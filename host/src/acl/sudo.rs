//! Which paths need `sudo` on top of the operation's capability (Vault's "root paths").
//! Only data and matching here; the pipeline decides when to ask.

/// `sys/` paths needing sudo, relative to `sys/` (Vault's system backend `PathsSpecial.Root`,
/// plus `seal` and `step-down`, which Vault checks in its HTTP handlers). `rotate/*` covers
/// Vault's `rotate/keyring`, `rotate/root` and `rotate/config`.
pub const SYS_SUDO_PATHS: &[&str] = &[
    "auth/*",
    "remount",
    "audit",
    "audit/*",
    "raw",
    "raw/*",
    "rotate",
    "rotate/*",
    "config/cors",
    "config/auditing/*",
    "config/ui/headers/*",
    "plugins/catalog/*",
    "revoke-prefix/*",
    "revoke-force/*",
    "leases/revoke-prefix/*",
    "leases/revoke-force/*",
    "leases/lookup/*",
    "leases",
    "internal/inspect/*",
    "seal",
    "step-down",
];

/// Token store paths needing sudo, relative to `auth/token/`. (Creating a token with
/// policies outside the caller's, or with `no_parent`, also needs sudo; that depends on
/// the request body and is the token store's check.)
pub const TOKEN_SUDO_PATHS: &[&str] = &["revoke-orphan/*", "accessors*"];

/// PKI paths needing sudo, relative to the PKI mount.
pub const PKI_SUDO_PATHS: &[&str] = &["root", "root/sign-self-issued"];

/// Whether a request path (from the API root, e.g. `sys/audit/file`) needs sudo because it
/// is one of `sys/`'s or the token store's root paths. Engine mounts are answered by
/// [`special_path_matches`] with the engine's own list (e.g. [`PKI_SUDO_PATHS`]).
pub fn sudo_required(path: &str) -> bool {
    let path = path.trim_start_matches('/');
    if let Some(relative) = path.strip_prefix("sys/") {
        return special_path_matches(SYS_SUDO_PATHS, relative);
    }
    if let Some(relative) = path.strip_prefix("auth/token/") {
        return special_path_matches(TOKEN_SUDO_PATHS, relative);
    }
    false
}

/// Vault's `Router.RootPath` on a mount-relative path: the longest pattern that is a
/// prefix of the path decides (a trailing `*` makes it a prefix pattern, counted without
/// the `*`); a prefix pattern then matches, an exact one only if it is the whole path.
pub fn special_path_matches(patterns: &[&str], relative_path: &str) -> bool {
    let mut longest: Option<(&str, bool)> = None;
    for pattern in patterns {
        let (key, is_prefix) = match pattern.strip_suffix('*') {
            Some(key) => (key, true),
            None => (*pattern, false),
        };
        if relative_path.starts_with(key) && longest.is_none_or(|(best, _)| key.len() > best.len())
        {
            longest = Some((key, is_prefix));
        }
    }
    match longest {
        Some((_, true)) => true,
        Some((key, false)) => key == relative_path,
        None => false,
    }
}
