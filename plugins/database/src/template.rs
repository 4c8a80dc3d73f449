//! Pure functions behind the database engine: SQL statement lists and placeholders,
//! usernames (Vault's default template and a checked subset of custom templates),
//! passwords (Vault's default policy), and small SQL helpers.
//! Nothing here touches the host; everything is unit-tested natively.

use base64::Engine as _;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Length of a generated password (Vault's default policy).
pub const PASSWORD_LENGTH: usize = 20;
/// Random characters in a default username; they come before anything that may be cut.
pub const USERNAME_RANDOM_CHARS: usize = 20;
/// Base62 alphabet for random name parts.
pub const BASE62: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Vault's default password alphabet: letters, digits and `-`.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";

/// Expands a stored statement list the way Vault does: each element may be base64; an
/// element containing a `DO $$ ... END` style body stays whole; others split on `;`.
pub fn split_statements(elements: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for element in elements {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(element.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|text| {
                text.chars().all(|c| !c.is_control() || c.is_whitespace()) && looks_like_sql(text)
            });
        let text = decoded.unwrap_or_else(|| element.clone());
        let has_body = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word.eq_ignore_ascii_case("END"));
        if has_body {
            if !text.trim().is_empty() {
                out.push(text.trim().to_string());
            }
            continue;
        }
        out.extend(
            text.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    out
}

fn looks_like_sql(text: &str) -> bool {
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "CREATE"
            | "ALTER"
            | "GRANT"
            | "REVOKE"
            | "DROP"
            | "DO"
            | "SELECT"
            | "REASSIGN"
            | "SET"
            | "COMMENT"
            | "INSERT"
            | "UPDATE"
            | "DELETE"
    )
}

/// Replaces `{{key}}` placeholders.
pub fn render(statement: &str, vars: &[(&str, &str)]) -> String {
    let mut out = statement.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `name` is safe to splice into operator templates inside `"..."` or `'...'`.
pub fn is_sql_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| matches!(c, '"' | '\'' | '\\' | ';' | '\0') || c.is_control())
}

/// PostgreSQL timestamp for `{{expiration}}`: `2026-08-22 14:03:11+0000`.
pub fn pg_timestamp(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = coffer_sdk::time::civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}+0000")
}

/// Keeps characters that are safe in a username; others become `_`.
fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Vault's default username: `v-<display:8>-<role:8>-<random:20>-<unix>`, cut to 63 bytes.
pub fn default_username(display_name: &str, role: &str, random: &str, unix: u64) -> String {
    let name = format!(
        "v-{}-{}-{}-{unix}",
        truncate(&sanitize(display_name), 8),
        truncate(&sanitize(role), 8),
        random
    );
    truncate(&name, MAX_IDENTIFIER_BYTES)
}

/// Renders a custom `username_template`: `{{ expr | filter ... }}` where expr is
/// `.DisplayName`, `.RoleName`, `random N`, `unix_time`, `unix_time_millis`, and filters
/// are `truncate N`, `lowercase`, `uppercase`, `replace "a" "b"`. `random` draws from
/// `next_random`. Nothing is cut or replaced afterwards (as in Vault, a custom template
/// says exactly what the name is): pass the result through [`check_username`] before it
/// reaches SQL.
pub fn render_username(
    template: &str,
    display_name: &str,
    role: &str,
    unix_millis: u64,
    next_random: &mut dyn FnMut(usize) -> String,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let end = after.find("}}").ok_or("unclosed {{ in username_template")?;
        let expression = after.get(..end).unwrap_or_default();
        out.push_str(&evaluate(
            expression,
            display_name,
            role,
            unix_millis,
            next_random,
        )?);
        rest = after.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a rendered username before any SQL sees it: PostgreSQL would silently cut a
/// name longer than 63 bytes (so the user created would not be the one returned), and an
/// empty name, or one with a quote, backslash, semicolon, NUL or control character,
/// breaks the quoting of the operator's statements. The error says what to change.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "username_template rendered an empty username; make the template produce at least {{random N}}"
                .to_string(),
        );
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "username_template rendered a {}-byte username {name:?}; PostgreSQL allows at most {MAX_IDENTIFIER_BYTES} bytes, so shorten the template or add `| truncate N` to its parts",
            name.len()
        ));
    }
    if !is_sql_safe_name(name) {
        return Err(format!(
            "username_template rendered the username {name:?}, which contains a quote, backslash, semicolon, NUL or control character that cannot be used in SQL names; change the template (its `replace` filters) so it produces only letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

fn evaluate(
    expression: &str,
    display_name: &str,
    role: &str,
    unix_millis: u64,
    next_random: &mut dyn FnMut(usize) -> String,
) -> Result<String, String> {
    let mut stages = expression.split('|').map(str::trim);
    let source = stages.next().unwrap_or_default();
    let words: Vec<&str> = source.split_whitespace().collect();
    let mut value = match words.as_slice() {
        [".DisplayName"] => sanitize(display_name),
        [".RoleName"] => sanitize(role),
        ["unix_time"] => (unix_millis / 1000).to_string(),
        ["unix_time_millis"] => unix_millis.to_string(),
        ["random", n] => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("random needs a length, got {n:?}"))?;
            if n == 0 || n > 64 {
                return Err("random length must be between 1 and 64".to_string());
            }
            next_random(n)
        }
        _ => {
            return Err(format!(
                "unsupported username_template expression {source:?}"
            ));
        }
    };
    for stage in stages {
        let words = split_args(stage);
        value = match words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["truncate", n] => truncate(
                &value,
                n.parse()
                    .map_err(|_| format!("truncate needs a number, got {n:?}"))?,
            ),
            ["lowercase"] => value.to_lowercase(),
            ["uppercase"] => value.to_uppercase(),
            ["replace", from, to] => value.replace(from, to),
            _ => return Err(format!("unsupported username_template filter {stage:?}")),
        };
    }
    Ok(value)
}

fn split_args(stage: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in stage.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

/// Checks, at config time, that a template renders, is a safe name, and keeps at least
/// some random characters inside the 63-byte limit even for long display and role names.
pub fn check_username_template(template: &str) -> Result<(), String> {
    let long_display = "d".repeat(80);
    let long_role = "r".repeat(80);
    let mut counter = 0u32;
    let mut first_source = |n: usize| {
        counter += 1;
        "a".repeat(n)
    };
    let first = render_username(template, &long_display, &long_role, 0, &mut first_source)?;
    let mut second_source = |n: usize| "b".repeat(n);
    let second = render_username(template, &long_display, &long_role, 0, &mut second_source)?;
    // Names that render longer are refused when rendered; the randomness must survive in
    // the part that fits.
    let (first, second) = (
        truncate(&first, MAX_IDENTIFIER_BYTES),
        truncate(&second, MAX_IDENTIFIER_BYTES),
    );
    if counter == 0 || first == second {
        return Err("username_template must keep random characters within PostgreSQL's 63-byte limit (put {{random N}} early)".to_string());
    }
    if !is_sql_safe_name(&first) {
        return Err(
            "username_template produces characters that are unsafe in SQL names".to_string(),
        );
    }
    Ok(())
}

/// Maps random bytes onto Vault's default password alphabet; `None` unless the result has
/// a lower-case letter, an upper-case letter, a digit and a `-`.
pub fn password_from(bytes: &[u8]) -> Option<String> {
    let password: String = bytes
        .iter()
        .take(PASSWORD_LENGTH)
        .map(|b| {
            char::from(
                PASSWORD_ALPHABET
                    .get(usize::from(*b) % PASSWORD_ALPHABET.len())
                    .copied()
                    .unwrap_or(b'a'),
            )
        })
        .collect();
    let complete = password.len() == PASSWORD_LENGTH
        && password.chars().any(|c| c.is_ascii_lowercase())
        && password.chars().any(|c| c.is_ascii_uppercase())
        && password.chars().any(|c| c.is_ascii_digit())
        && password.contains('-');
    complete.then_some(password)
}

/// Maps random bytes onto base62.
pub fn base62_from(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            char::from(
                BASE62
                    .get(usize::from(*b) % BASE62.len())
                    .copied()
                    .unwrap_or(b'A'),
            )
        })
        .collect()
}

/// Percent-escapes a DSN component (user or password inside a URL).
pub fn escape_url_component(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `allowed_roles` matching: `*` allows all; entries may use `*` as a glob.
pub fn role_allowed(allowed: &[String], role: &str) -> bool {
    allowed
        .iter()
        .any(|pattern| coffer_sdk::glob(pattern, role))
}

/// Pool size when a config sets none (Vault's default `max_open_connections`).
pub const DEFAULT_MAX_OPEN_CONNECTIONS: i64 = 4;

/// `dsn` with a config's pool settings appended as the parameters the host's pool reads
/// (`pool_max_conns`, `pool_max_idle_conns`, `pool_max_conn_lifetime` in seconds), with
/// Vault's meanings: 0 open means 4, 0 idle means as many as open, negative idle means none,
/// 0 lifetime means the host's longest. The host caps each.
pub fn with_pool_settings(dsn: String, max_open: i64, max_idle: i64, lifetime: u64) -> String {
    let open = match max_open {
        n if n > 0 => n,
        _ => DEFAULT_MAX_OPEN_CONNECTIONS,
    };
    let idle = match max_idle {
        0 => open,
        n if n < 0 => 0,
        n => n.min(open),
    };
    let settings = [
        ("pool_max_conns", open.to_string()),
        ("pool_max_idle_conns", idle.to_string()),
        ("pool_max_conn_lifetime", lifetime.to_string()),
    ];
    let is_url = dsn.starts_with("postgres://") || dsn.starts_with("postgresql://");
    let mut out = dsn;
    for (name, value) in settings {
        let separator = match (is_url, out.contains('?')) {
            (true, true) => "&",
            (true, false) => "?",
            (false, _) => " ",
        };
        out = format!("{out}{separator}{name}={value}");
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn statements_split_like_vault() {
        let list = vec![
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";".to_string(),
            "DO $$ BEGIN CREATE ROLE x; EXCEPTION WHEN duplicate_object THEN NULL; END $$;".to_string(),
            base64::engine::general_purpose::STANDARD.encode("GRANT a TO b; GRANT c TO d"),
        ];
        let split = split_statements(&list);
        assert_eq!(split.len(), 5, "{split:?}");
        assert!(split[0].starts_with("CREATE ROLE"));
        assert!(split[2].starts_with("DO $$"));
        assert_eq!(split[3], "GRANT a TO b");
    }

    #[test]
    fn default_usernames_fit_and_keep_their_randomness() {
        let random = "a".repeat(USERNAME_RANDOM_CHARS);
        let name = default_username(
            "token-a-very-long-display-name",
            "readonly-role-name",
            &random,
            1_755_871_391,
        );
        assert_eq!(name, format!("v-token-a--readonly-{random}-1755871391"));
        assert!(name.len() <= MAX_IDENTIFIER_BYTES);
        assert_eq!(
            default_username("to\"ken", "r", "x", 1),
            "v-to_ken-r-x-1",
            "quotes never reach SQL"
        );
    }

    #[test]
    fn custom_username_templates_are_checked() {
        assert!(check_username_template("{{random 10}}-{{.RoleName | truncate 10}}").is_ok());
        assert!(
            check_username_template("{{.DisplayName}}{{.RoleName}}{{random 20}}").is_err(),
            "random cut off at 63 bytes"
        );
        assert!(check_username_template("static-name").is_err());
        assert!(check_username_template("{{ printf \"x\" }}").is_err());
        let mut source = |n: usize| "Z".repeat(n);
        let name = render_username(
            "v_{{.RoleName | uppercase}}_{{random 4}}",
            "t",
            "app",
            5000,
            &mut source,
        );
        assert_eq!(name.as_deref(), Ok("v_APP_ZZZZ"));
    }

    #[test]
    fn rendered_usernames_postgresql_cannot_use_are_refused() {
        let mut source = |n: usize| "Z".repeat(n);
        let quote = "{{random 4}}_{{.DisplayName | replace \"-\" \"'\"}}";
        assert!(
            check_username_template(quote).is_ok(),
            "nothing to replace in the config-time sample"
        );
        let rendered = render_username(quote, "token-web", "app", 0, &mut source).unwrap();
        assert_eq!(rendered, "ZZZZ_token'web");
        let refused = check_username(&rendered).unwrap_err();
        assert!(refused.contains("replace"), "{refused}");
        let long = render_username(
            "{{random 4}}_{{.RoleName}}",
            "t",
            &"r".repeat(70),
            0,
            &mut source,
        )
        .unwrap();
        assert_eq!(long.len(), 75, "custom templates are not cut silently");
        let refused = check_username(&long).unwrap_err();
        assert!(refused.contains("truncate"), "{refused}");
        assert!(check_username("").unwrap_err().contains("empty"));
        assert!(check_username("a\0b").is_err());
        assert!(check_username(&"x".repeat(MAX_IDENTIFIER_BYTES)).is_ok());
        assert_eq!(check_username("v_app-1.x"), Ok(()));
    }

    #[test]
    fn passwords_follow_the_default_policy() {
        let bytes: Vec<u8> = (0u8..20)
            .map(|i| i.wrapping_mul(13).wrapping_add(62))
            .collect();
        let password = password_from(&bytes);
        assert!(
            password.as_ref().is_some_and(|p| p.len() == 20),
            "{password:?}"
        );
        assert_eq!(password_from(&[0u8; 20]), None, "all one class is rejected");
    }

    #[test]
    fn allowed_roles_globs() {
        let allowed = vec!["grade-api-role".to_string(), "analytics-*".to_string()];
        assert!(role_allowed(&allowed, "grade-api-role"));
        assert!(role_allowed(&allowed, "analytics-eu"));
        assert!(!role_allowed(&allowed, "admin"));
        assert!(role_allowed(&["*".to_string()], "anything"));
        assert!(!role_allowed(&[], "anything"));
    }

    #[test]
    fn timestamps_and_escaping() {
        assert_eq!(pg_timestamp(1_755_871_391), "2025-08-22 14:03:11+0000");
        assert_eq!(escape_url_component("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn pool_settings_follow_vaults_meanings_in_both_dsn_forms() {
        assert_eq!(
            with_pool_settings("postgresql://u:p@h:1/d".to_string(), 0, 0, 0),
            "postgresql://u:p@h:1/d?pool_max_conns=4&pool_max_idle_conns=4&pool_max_conn_lifetime=0"
        );
        assert_eq!(
            with_pool_settings(
                "postgresql://u:p@h:1/d?sslmode=require".to_string(),
                8,
                -1,
                60
            ),
            "postgresql://u:p@h:1/d?sslmode=require&pool_max_conns=8&pool_max_idle_conns=0&pool_max_conn_lifetime=60"
        );
        assert_eq!(
            with_pool_settings("host=h dbname=d".to_string(), 2, 5, 0),
            "host=h dbname=d pool_max_conns=2 pool_max_idle_conns=2 pool_max_conn_lifetime=0"
        );
    }
}
