//! The database engine against a real PostgreSQL, through the real server and CLI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::Duration;

use coffer_tests::{
    Coffer, DEV_TOKEN, PG_ROOT_PASSWORD, PG_ROOT_USER, Postgres, Value, eventually,
    fixtures_config, json, stdout, temp_dir,
};

const CREATION: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{{name}}\";";

fn config_server(extra: &str) -> (Coffer, Vec<String>) {
    let mut coffer = Coffer::with_config(
        &temp_dir("db"),
        &fixtures_config().replace("revoke_attempts = 3", extra),
    );
    let keys = coffer.init_and_unseal(1, 1);
    (coffer, keys)
}

/// Enables `database/`, configures `grade-api-db` and the tutorial role over HTTP.
fn configure(coffer: &Coffer, pg: &Postgres, sslmode: &str, role_body: Value) {
    let enable = coffer.call(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    );
    assert!(
        enable.status == 204 || enable.status == 200,
        "{}",
        enable.text
    );
    let config = coffer.call(
        "POST",
        "database/config/grade-api-db",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "allowed_roles": "grade-api-role,analytics-role",
            "connection_url": pg.connection_url(sslmode),
            "username": PG_ROOT_USER,
            "password": PG_ROOT_PASSWORD,
        })),
    );
    assert_eq!(config.status, 204, "{}", config.text);
    let role = coffer.call("POST", "database/roles/grade-api-role", Some(role_body));
    assert_eq!(role.status, 204, "{}", role.text);
}

fn creds(coffer: &Coffer) -> (String, String, String, u64) {
    let reply = coffer.call("GET", "database/creds/grade-api-role", None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    (
        reply.json["lease_id"].as_str().unwrap().to_string(),
        reply.data()["username"].as_str().unwrap().to_string(),
        reply.data()["password"].as_str().unwrap().to_string(),
        reply.json["lease_duration"].as_u64().unwrap(),
    )
}

#[test]
fn tutorial_walkthrough_through_the_cli_over_tls() {
    let pg = Postgres::start(true);
    tutorial_walkthrough(&Coffer::dev(), &pg, "v-root-grade-ap-");
}

/// The same walkthrough by an operator whose token has only the operator policy; then a
/// workload token whose one policy is `database/creds/grade-api-role` reads credentials
/// there and nothing else.
#[test]
fn tutorial_walkthrough_as_an_operator_then_a_workload_with_one_path() {
    let pg = Postgres::start(true);
    let mut coffer = Coffer::dev();
    coffer.become_operator();
    tutorial_walkthrough(&coffer, &pg, "v-token-grade-a");
    coffer.token = DEV_TOKEN.to_string();
    coffer.policy(
        "grade-api",
        r#"path "database/creds/grade-api-role" { capabilities = ["read"] }"#,
    );
    coffer.call(
        "POST",
        "database/roles/analytics-role",
        Some(json!({"db_name": "grade-api-db", "creation_statements": CREATION})),
    );
    let created = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["grade-api"], "ttl": "1h"})),
    );
    coffer.token = created.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let creds = coffer.call("GET", "database/creds/grade-api-role", None);
    assert_eq!(creds.status, 200, "{}", creds.text);
    let (user, password) = (
        creds.data()["username"].as_str().unwrap(),
        creds.data()["password"].as_str().unwrap(),
    );
    assert_eq!(pg.login(user, password, "SELECT 1"), Ok("1".to_string()));
    let roles_before = pg.roles_like("v-");
    for (method, path) in [
        ("GET", "database/creds/analytics-role"),
        ("GET", "database/config/grade-api-db"),
        ("GET", "database/roles/grade-api-role"),
        ("POST", "database/roles/grade-api-role"),
        ("POST", "database/rotate-root/grade-api-db"),
        ("LIST", "database/roles"),
        ("POST", "database/creds/grade-api-role"),
        ("DELETE", "database/config/grade-api-db"),
        ("POST", "sys/leases/revoke-prefix/database/creds"),
        ("LIST", "sys/leases/lookup/database/creds/grade-api-role/"),
        ("POST", "sys/mounts/database/tune"),
        ("GET", "pki/roles/x"),
    ] {
        let reply = coffer.call(
            method,
            path,
            Some(json!({"db_name": "grade-api-db", "creation_statements": "DROP TABLE grades"})),
        );
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
    }
    assert_eq!(
        pg.roles_like("v-"),
        roles_before,
        "a refused read minted a user"
    );
    assert!(
        pg.role_exists(user),
        "a refused request revoked the workload's user"
    );
}

fn tutorial_walkthrough(coffer: &Coffer, pg: &Postgres, user_prefix: &str) {
    let cli = |args: &[&str]| stdout(&coffer.cli(args));
    cli(&["secrets", "enable", "database"]);
    let url = pg.connection_url("require");
    let allowed = "allowed_roles=grade-api-role,analytics-role";
    cli(&[
        "write",
        "database/config/grade-api-db",
        "plugin_name=postgresql-database-plugin",
        allowed,
        &format!("connection_url={url}"),
        "username=vault_root",
        "password=vault-root-password",
    ]);
    cli(&["write", "-force", "database/rotate-root/grade-api-db"]);
    assert!(
        pg.login(PG_ROOT_USER, PG_ROOT_PASSWORD, "SELECT 1")
            .is_err(),
        "rotate-root must retire the old root password"
    );
    let config = cli(&["read", "database/config/grade-api-db"]);
    assert!(
        !config.contains(PG_ROOT_PASSWORD),
        "config read leaks a password:\n{config}"
    );
    let config_json: Value = serde_json::from_str(&cli(&[
        "read",
        "-format=json",
        "database/config/grade-api-db",
    ]))
    .unwrap();
    assert!(
        config_json["data"]["connection_details"]
            .get("password")
            .is_none()
    );
    assert_eq!(
        config_json["data"]["connection_details"]["username"],
        json!("vault_root")
    );
    cli(&[
        "write",
        "database/roles/grade-api-role",
        "db_name=grade-api-db",
        &format!("creation_statements={CREATION}"),
        "default_ttl=1h",
        "max_ttl=24h",
    ]);
    let issued: Value = serde_json::from_str(&cli(&[
        "read",
        "-format=json",
        "database/creds/grade-api-role",
    ]))
    .unwrap();
    let lease = issued["lease_id"].as_str().unwrap();
    let user = issued["data"]["username"].as_str().unwrap();
    let password = issued["data"]["password"].as_str().unwrap();
    assert!(lease.starts_with("database/creds/grade-api-role/"));
    assert_eq!(issued["lease_duration"], json!(3600));
    assert_eq!(issued["renewable"], json!(true));
    assert!(user.starts_with(user_prefix) && user.len() <= 63, "{user}");
    assert_eq!(
        pg.login(
            user,
            password,
            "SELECT grade FROM grades WHERE student = 'ada'"
        ),
        Ok("1".to_string())
    );
    let table = cli(&["read", "database/creds/grade-api-role"]);
    assert!(
        table.contains("lease_id")
            && table.contains("lease_duration")
            && table.contains("lease_renewable"),
        "{table}"
    );

    let renewed = cli(&["lease", "renew", lease]);
    assert!(renewed.contains(lease), "{renewed}");
    cli(&["lease", "revoke", lease]);
    assert!(!pg.role_exists(user), "revoked user still in pg_roles");
    assert!(pg.login(user, password, "SELECT 1").is_err());

    let second: Value = serde_json::from_str(&cli(&[
        "read",
        "-format=json",
        "database/creds/grade-api-role",
    ]))
    .unwrap();
    let listed = cli(&["list", "sys/leases/lookup/database/creds/grade-api-role/"]);
    assert!(
        listed.contains(
            second["lease_id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
        ),
        "{listed}"
    );
    cli(&[
        "lease",
        "revoke",
        "-prefix",
        "database/creds/grade-api-role/",
    ]);
    assert!(!pg.role_exists(second["data"]["username"].as_str().unwrap()));
    let empty = coffer.cli(&["list", "sys/leases/lookup/database/creds/grade-api-role/"]);
    assert_eq!(empty.status.code(), Some(2), "no leases left to list");
}

#[test]
fn tls_modes_are_honoured() {
    let pg = Postgres::start(true);
    let (coffer, _) = config_server("revoke_attempts = 3");
    coffer.call(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    );
    let write = |url: String| {
        coffer.call("POST", "database/config/tls", Some(json!({
        "plugin_name": "postgresql-database-plugin", "connection_url": url, "username": PG_ROOT_USER, "password": PG_ROOT_PASSWORD, "allowed_roles": "*",
    })))
    };
    let plain = write(pg.connection_url("disable"));
    assert_eq!(
        plain.status, 400,
        "the server rejects non-TLS connections: {}",
        plain.text
    );
    assert!(plain.errors().contains("error verifying connection"));
    assert_eq!(write(pg.connection_url("require")).status, 204);
    let verified = format!(
        "{}&sslrootcert={}",
        pg.connection_url("verify-full"),
        pg.server_cert().display()
    );
    assert_eq!(write(verified).status, 204, "verify-full with the right CA");
    let wrong_ca = format!(
        "{}&sslrootcert=/etc/ssl/certs/ca-certificates.crt",
        pg.connection_url("verify-ca")
    );
    let refused = write(wrong_ca);
    assert_eq!(
        refused.status, 400,
        "verify-ca with a CA that did not sign the server must fail: {}",
        refused.text
    );
}

#[test]
fn walkthrough_over_http_with_short_ttls_and_renew_caps() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": [CREATION], "default_ttl": "5s", "max_ttl": "8s"}),
    );
    let (lease, user, password, duration) = creds(&coffer);
    assert_eq!(duration, 5);
    assert!(pg.role_exists(&user));
    assert!(
        pg.login(&user, &password, "SELECT count(*) FROM grades")
            .is_ok()
    );
    let renewed = coffer.call(
        "PUT",
        "sys/leases/renew",
        Some(json!({"lease_id": lease, "increment": "1h"})),
    );
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert!(
        renewed.json["lease_duration"].as_u64().unwrap() <= 8,
        "capped at max_ttl: {}",
        renewed.text
    );
    assert!(
        renewed.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("max_ttl")
    );
    assert!(
        eventually(Duration::from_secs(12), || !pg.role_exists(&user)),
        "a 5s (renewed to 8s) user was not dropped on time"
    );
    assert!(pg.login(&user, &password, "SELECT 1").is_err());
    let after = coffer.call("PUT", "sys/leases/renew", Some(json!({"lease_id": lease})));
    assert_eq!(after.status, 400);
    assert_eq!(after.errors(), "lease not found");
}

#[test]
fn rotate_root_then_coffer_still_creates_users() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    assert_eq!(
        coffer
            .call("POST", "database/rotate-root/grade-api-db", None)
            .status,
        204
    );
    assert!(
        pg.login(PG_ROOT_USER, PG_ROOT_PASSWORD, "SELECT 1")
            .is_err()
    );
    let (_, user, password, _) = creds(&coffer);
    assert!(pg.login(&user, &password, "SELECT 1").is_ok());
    assert_eq!(
        coffer
            .call("POST", "database/rotate-root/grade-api-db", None)
            .status,
        204,
        "rotating twice works"
    );
    let (lease, user2, _, _) = creds(&coffer);
    assert_eq!(
        coffer
            .call("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})))
            .status,
        204
    );
    assert!(!pg.role_exists(&user2));
    assert!(pg.role_exists(&user));
}

#[test]
fn revoke_prefix_removes_exactly_its_users() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    coffer.call(
        "POST",
        "database/roles/analytics-role",
        Some(json!({"db_name": "grade-api-db", "creation_statements": CREATION})),
    );
    let grade: Vec<String> = (0..3).map(|_| creds(&coffer).1).collect();
    let analytics = coffer
        .call("GET", "database/creds/analytics-role", None)
        .data()["username"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/leases/revoke-prefix/database/creds/grade-api-role",
                None
            )
            .status,
        204
    );
    for user in &grade {
        assert!(!pg.role_exists(user), "{user} survived revoke-prefix");
    }
    assert!(
        pg.role_exists(&analytics),
        "revoke-prefix took a user outside the prefix"
    );
}

#[test]
fn revocation_takes_back_every_kind_of_grant_then_drops_the_user() {
    let pg = Postgres::start(false);
    pg.admin(
        "gradedb",
        &format!(
            "CREATE SCHEMA reports; CREATE TABLE reports.daily (day date); \
             CREATE SEQUENCE reports.ticket; CREATE TABLE reports.untouched (x int); \
             GRANT ALL ON SCHEMA reports TO {PG_ROOT_USER} WITH GRANT OPTION; \
             GRANT ALL ON ALL TABLES IN SCHEMA reports TO {PG_ROOT_USER} WITH GRANT OPTION; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA reports TO {PG_ROOT_USER} WITH GRANT OPTION; \
             GRANT ALL ON DATABASE gradedb TO {PG_ROOT_USER} WITH GRANT OPTION; \
             GRANT pg_signal_backend TO {PG_ROOT_USER};"
        ),
    );
    let (coffer, _) = config_server("revoke_attempts = 3");
    // Schema usage, a table in another schema, a sequence, one column of a public table,
    // and the database itself: DROP ROLE fails while any of them is still granted.
    let creation = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; \
        GRANT USAGE ON SCHEMA reports TO \"{{name}}\"; GRANT SELECT, INSERT ON reports.daily TO \"{{name}}\"; \
        GRANT USAGE ON SEQUENCE reports.ticket TO \"{{name}}\"; GRANT SELECT (student) ON grades TO \"{{name}}\"; \
        GRANT CONNECT, TEMPORARY ON DATABASE gradedb TO \"{{name}}\";";
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": creation}),
    );
    let (lease, user, password, _) = creds(&coffer);
    let quoted = user.replace('"', "\"\"");
    assert_eq!(
        pg.login(&user, &password, "SELECT count(*) FROM reports.daily"),
        Ok("0".to_string()),
        "the grants were not in place"
    );
    // A session of the user is open while it is revoked.
    let mut session = pg.hold_session(&user, &password);
    assert_eq!(
        coffer
            .call(
                "PUT",
                "sys/leases/revoke",
                Some(json!({ "lease_id": lease }))
            )
            .status,
        204
    );
    assert!(!pg.role_exists(&user), "{user} survived revocation");
    assert!(
        pg.login(&user, &password, "SELECT 1").is_err(),
        "the revoked user can still log in"
    );
    // Its open session was ended (the root user holds pg_signal_backend here).
    let ended = session.wait().unwrap();
    assert!(!ended.success(), "the held session ran to completion");
    assert_eq!(
        pg.admin(
            "gradedb",
            &format!(
                "SELECT count(*) FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid WHERE r.rolname = '{}'",
                quoted.replace('\'', "''")
            )
        ),
        "0"
    );
}

#[test]
fn scram_verifiers_keep_cleartext_out_of_postgres() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    let update = coffer.call("POST", "database/config/grade-api-db", Some(json!({"password_authentication": "scram-sha-256", "connection_url": pg.connection_url("disable")})));
    assert_eq!(update.status, 204, "{}", update.text);
    let (_, user, password, _) = creds(&coffer);
    let stored = pg.admin(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
    );
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert_eq!(
        pg.login(&user, &password, "SELECT 1"),
        Ok("1".to_string()),
        "PostgreSQL accepts the verifier Coffer computed"
    );
}

#[test]
fn restart_revokes_what_expired_while_down_and_keeps_live_leases_on_time() {
    let pg = Postgres::start(false);
    let (mut coffer, keys) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION, "default_ttl": "2s"}),
    );
    let (_, short_user, _, _) = creds(&coffer);
    coffer.call(
        "POST",
        "database/roles/grade-api-role",
        Some(json!({"default_ttl": "9s"})),
    );
    let (_, live_user, _, _) = creds(&coffer);
    coffer.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        pg.role_exists(&short_user),
        "nobody revoked it while Coffer was down"
    );
    coffer.start();
    coffer.unseal(&keys);
    assert!(
        eventually(Duration::from_secs(4), || !pg.role_exists(&short_user)),
        "expired lease not revoked after restart"
    );
    assert!(pg.role_exists(&live_user));
    assert!(
        eventually(Duration::from_secs(10), || !pg.role_exists(&live_user)),
        "live lease not revoked on time after restart"
    );
}

#[test]
fn database_outage_retries_and_loses_nothing() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 8");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION, "default_ttl": "2s"}),
    );
    let (lease, user, _, _) = creds(&coffer);
    pg.stop();
    std::thread::sleep(Duration::from_secs(5));
    let lookup = coffer.call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})));
    assert_eq!(
        lookup.status, 200,
        "the lease must be kept while revocation fails: {}",
        lookup.text
    );
    pg.resume();
    assert!(pg.role_exists(&user));
    assert!(
        eventually(Duration::from_secs(25), || !pg.role_exists(&user)),
        "revocation did not succeed after the database came back:\n{}",
        coffer.log_text()
    );
    assert!(eventually(Duration::from_secs(3), || coffer
        .call("PUT", "sys/leases/lookup", Some(json!({"lease_id": lease})))
        .status
        == 400));
}

/// A server whose database mount holds one user created without its lease (the server
/// crashed between CREATE ROLE and storing the lease); it is stopped, with the failpoint
/// cleared, its unseal keys, and the `v-` role count before that user.
fn crashed_before_the_lease(pg: &Postgres) -> (Coffer, Vec<String>, usize) {
    let (mut coffer, keys) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    let before = pg.roles_like("v-");
    coffer.crash_before_the_lease(&keys, "database/creds/grade-api-role");
    assert_eq!(
        pg.roles_like("v-"),
        before + 1,
        "the role was created before the crash"
    );
    (coffer, keys, before)
}

#[test]
fn crash_between_create_role_and_lease_is_rolled_back() {
    let pg = Postgres::start(false);
    let (mut coffer, keys, before) = crashed_before_the_lease(&pg);
    coffer.start();
    coffer.unseal(&keys);
    assert!(
        eventually(Duration::from_secs(15), || pg.roles_like("v-") == before),
        "the orphaned role was not rolled back:\n{}",
        coffer.log_text()
    );
}

#[test]
fn hostile_input_gets_a_4xx_and_creates_nothing() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    let before = pg.roles_like("v-");
    let quoted = coffer.call(
        "POST",
        "database/roles/bad\"name",
        Some(json!({"db_name": "grade-api-db", "creation_statements": CREATION})),
    );
    assert!(
        quoted.status == 404 || quoted.status == 400,
        "{}",
        quoted.text
    );
    let unknown = coffer.call("GET", "database/creds/no-such-role", None);
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.errors(), "unknown role: no-such-role");
    coffer.call(
        "POST",
        "database/roles/other-role",
        Some(json!({"db_name": "grade-api-db", "creation_statements": CREATION})),
    );
    let not_allowed = coffer.call("GET", "database/creds/other-role", None);
    assert_eq!(not_allowed.status, 400);
    assert!(
        not_allowed.errors().contains("is not an allowed role"),
        "{}",
        not_allowed.text
    );
    let bad_sql = coffer.call("POST", "database/roles/analytics-role", Some(json!({"db_name": "grade-api-db", "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'; GRANT SELECT ON no_such_table TO \"{{name}}\";"})));
    assert_eq!(bad_sql.status, 204);
    let failed = coffer.call("GET", "database/creds/analytics-role", None);
    assert_eq!(failed.status, 400, "{}", failed.text);
    assert!(failed.errors().contains("no_such_table"), "{}", failed.text);
    let quotes_in_statements = coffer.call("POST", "database/roles/grade-api-role", Some(json!({"creation_statements": [CREATION, "COMMENT ON ROLE \"{{name}}\" IS 'it''s dynamic'"]})));
    assert_eq!(quotes_in_statements.status, 204);
    let (_, user, _, _) = creds(&coffer);
    assert_eq!(
        pg.admin(
            "postgres",
            &format!(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{user}'"
            )
        ),
        "it's dynamic"
    );
    assert_eq!(
        pg.roles_like("v-"),
        before + 1,
        "only the one good request created a user"
    );
    let unreachable = coffer.call("POST", "database/config/elsewhere", Some(json!({
        "plugin_name": "postgresql-database-plugin", "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.2:1/x?sslmode=disable",
        "username": "u", "password": "p",
    })));
    assert_eq!(unreachable.status, 400);
    assert!(
        unreachable.errors().contains("error verifying connection"),
        "{}",
        unreachable.text
    );
    let no_password_leak =
        unreachable.text.contains("\"p\"") || coffer.log_text().contains(PG_ROOT_PASSWORD);
    assert!(!no_password_leak, "a password reached an error or the log");
    let socket = coffer.call("POST", "database/config/socket", Some(json!({"plugin_name": "postgresql-database-plugin", "connection_url": "host=/var/run/postgresql dbname=x"})));
    assert_eq!(socket.status, 400);
    assert!(socket.errors().contains("Unix socket"), "{}", socket.text);
    let wrong_plugin = coffer.call("POST", "database/config/mysql", Some(json!({"plugin_name": "mysql-database-plugin", "connection_url": pg.connection_url("disable")})));
    assert_eq!(wrong_plugin.status, 400);
}

#[test]
fn engines_reach_only_endpoints_granted_to_their_own_mount() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    let dsn = format!(
        "host=127.0.0.1 port={} user={PG_ROOT_USER} password={PG_ROOT_PASSWORD} dbname=gradedb sslmode=disable",
        pg.port
    );
    let denied = coffer.call(
        "GET",
        &format!("hostile/sql?dsn={}", dsn.replace(' ', "%20")),
        None,
    );
    assert_eq!(
        denied.status, 403,
        "another mount's grant must not reach this mount: {}",
        denied.text
    );
    assert!(
        denied.errors().contains("not configured for this mount"),
        "{}",
        denied.text
    );
    let elsewhere = coffer.call(
        "GET",
        "hostile/sql?dsn=host%3D127.0.0.3%20port%3D5432%20dbname%3Dx",
        None,
    );
    assert_eq!(elsewhere.status, 403);
    assert!(
        !coffer.log_text().contains(PG_ROOT_PASSWORD),
        "the DSN's password reached the log"
    );
}

/// Sessions PostgreSQL has open for the root user.
fn root_sessions(pg: &Postgres) -> usize {
    pg.admin(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{PG_ROOT_USER}'"),
    )
    .parse()
    .unwrap()
}

#[test]
fn rotate_root_and_config_changes_leave_no_stranded_root_sessions() {
    let pg = Postgres::start(false);
    let (coffer, keys) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    // Each rotation changes the DSN's password; the pool opened with the old one closes.
    // (Before, each stranded a session: the test cluster allows 200.)
    for round in 0..200 {
        let rotated = coffer.call("POST", "database/rotate-root/grade-api-db", None);
        assert_eq!(rotated.status, 204, "rotation {round}: {}", rotated.text);
    }
    assert!(
        eventually(Duration::from_secs(10), || root_sessions(&pg) <= 4),
        "{} root sessions after 200 rotations; the pool holds at most 4",
        root_sessions(&pg)
    );
    let (_, user, password, _) = creds(&coffer);
    assert!(pg.login(&user, &password, "SELECT 1").is_ok());
    assert!(root_sessions(&pg) >= 1, "the pool keeps an idle session");
    // A config write closes the pool (its verification session included).
    let rewrite = coffer.call(
        "POST",
        "database/config/grade-api-db",
        Some(json!({"allowed_roles": "grade-api-role", "max_idle_connections": -1})),
    );
    assert_eq!(rewrite.status, 204, "{}", rewrite.text);
    assert!(
        eventually(Duration::from_secs(10), || root_sessions(&pg) == 0),
        "{} root sessions after a config write",
        root_sessions(&pg)
    );
    // max_idle_connections = -1 (Vault: no idle connections): nothing stays open.
    creds(&coffer);
    assert!(
        eventually(Duration::from_secs(10), || root_sessions(&pg) == 0),
        "{} root sessions kept with idle connections disabled",
        root_sessions(&pg)
    );
    // max_connection_lifetime: an idle session is closed when its lifetime ends.
    let lifetime = coffer.call(
        "POST",
        "database/config/grade-api-db",
        Some(json!({"max_idle_connections": 0, "max_connection_lifetime": "2s"})),
    );
    assert_eq!(lifetime.status, 204, "{}", lifetime.text);
    creds(&coffer);
    assert!(
        eventually(Duration::from_secs(5), || root_sessions(&pg) == 1),
        "one idle session is pooled"
    );
    assert!(
        eventually(Duration::from_secs(10), || root_sessions(&pg) == 0),
        "an idle session outlived max_connection_lifetime"
    );
    // Seal closes every pool.
    creds(&coffer);
    assert!(eventually(Duration::from_secs(5), || root_sessions(&pg) == 1));
    assert_eq!(coffer.call("PUT", "sys/seal", None).status, 204);
    assert!(
        eventually(Duration::from_secs(10), || root_sessions(&pg) == 0),
        "{} root sessions after seal",
        root_sessions(&pg)
    );
    // Disabling the mount closes its pool (after its leases were revoked through it).
    coffer.unseal(&keys);
    creds(&coffer);
    assert!(eventually(Duration::from_secs(5), || root_sessions(&pg) == 1));
    let disabled = coffer.call("DELETE", "sys/mounts/database", None);
    assert_eq!(disabled.status, 204, "{}", disabled.text);
    assert!(
        eventually(Duration::from_secs(10), || root_sessions(&pg) == 0),
        "{} root sessions after the mount was disabled",
        root_sessions(&pg)
    );
}

#[test]
fn failed_config_writes_leave_no_grant_and_cannot_fill_the_grant_table() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    coffer.call(
        "POST",
        "sys/mounts/database",
        Some(json!({"type": "database"})),
    );
    // 300 configs naming endpoints that refuse the connection: each fails verification.
    for port in 1..=300u16 {
        let junk = coffer.call("POST", &format!("database/config/junk{port}"), Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.2:{port}/x?sslmode=disable"),
            "username": "u", "password": "p",
        })));
        assert_eq!(junk.status, 400, "junk config {port}: {}", junk.text);
        assert!(
            junk.errors().contains("error verifying connection"),
            "{}",
            junk.text
        );
    }
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    let (_, user, password, _) = creds(&coffer);
    assert!(pg.login(&user, &password, "SELECT 1").is_ok());
    // A wrong root password fails verification: the config is not stored, and the mount's
    // working config is untouched.
    let wrong = coffer.call(
        "POST",
        "database/config/other",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.connection_url("disable"),
            "username": PG_ROOT_USER, "password": "wrong",
        })),
    );
    assert_eq!(wrong.status, 400, "{}", wrong.text);
    assert!(!wrong.text.contains("wrong\""), "{}", wrong.text);
    assert_eq!(
        coffer.call("GET", "database/config/other", None).status,
        404
    );
    // Deleting the working config withdraws its endpoint; writing it again restores it.
    assert_eq!(
        coffer
            .call("DELETE", "database/config/grade-api-db", None)
            .status,
        204
    );
    let orphaned = coffer.call("GET", "database/creds/grade-api-role", None);
    assert_eq!(orphaned.status, 400, "{}", orphaned.text);
}

#[test]
fn an_unreachable_database_does_not_hold_up_expiry_on_other_mounts() {
    let pg = Postgres::start(false);
    let (mut coffer, keys) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    // A static role that is due for rotation at every maintenance pass from now on.
    pg.admin(
        "postgres",
        "CREATE ROLE static_account WITH LOGIN PASSWORD 'initial'",
    );
    let static_role = coffer.call(
        "POST",
        "database/static-roles/analytics-role",
        Some(json!({"db_name": "grade-api-db", "username": "static_account", "rotation_period": "5s"})),
    );
    assert_eq!(static_role.status, 204, "{}", static_role.text);
    // A pending write-ahead entry: the server dies between creating a user and its lease.
    coffer.stop();
    coffer.set_env("COFFER_FAILPOINT_CRASH_BEFORE_LEASE", "database/creds/");
    coffer.start();
    coffer.unseal(&keys);
    assert!(
        coffer
            .try_call("GET", "database/creds/grade-api-role")
            .is_none()
    );
    coffer.kill();
    coffer.set_env("COFFER_FAILPOINT_CRASH_BEFORE_LEASE", "");
    // The database now hangs: every connect waits out its timeout.
    pg.stop();
    let _hole = coffer_tests::BlackHole::listen(pg.port);
    coffer.start();
    coffer.unseal(&keys);
    for round in 0..4 {
        let reply = coffer.call("GET", "leasing/creds/app?ttl=1", None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let user = reply.data()["username"].as_str().unwrap().to_string();
        assert!(
            eventually(Duration::from_millis(2500), || coffer
                .list("leasing/revoked/")
                .contains(&user)),
            "round {round}: a lease on another mount was not revoked within a second of expiry:\n{}",
            coffer.log_text()
        );
    }
    assert!(
        eventually(Duration::from_secs(15), || coffer
            .log_text()
            .contains("rollback failed")),
        "the rollback on the unreachable database was never attempted:\n{}",
        coffer.log_text()
    );
}

#[test]
fn disabling_while_credentials_are_created_leaves_no_lease_and_no_user() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    let before = pg.roles_like("v-");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let replies = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut replies = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        replies.push(coffer.call("GET", "database/creds/grade-api-role", None));
                    }
                    replies
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let disable = coffer.call("DELETE", "sys/mounts/database", None);
        assert_eq!(disable.status, 204, "{}", disable.text);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect::<Vec<_>>()
    });
    let issued = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 404 && r.errors().contains("no handler for route"))
        .count();
    assert_eq!(
        issued + refused,
        replies.len(),
        "every request is either served in full or refused: {:?}",
        replies
            .iter()
            .filter(|r| r.status != 200 && r.status != 404)
            .map(|r| &r.text)
            .collect::<Vec<_>>()
    );
    assert!(
        issued > 0 && refused > 0,
        "{issued} issued, {refused} refused"
    );
    assert_eq!(
        pg.roles_like("v-"),
        before,
        "users of the disabled mount remain:\n{}",
        coffer.log_text()
    );
    assert!(coffer.list("sys/leases/lookup/database/").is_empty());
    assert_eq!(coffer.call("GET", "sys/mounts/database", None).status, 404);
}

#[test]
fn a_disable_whose_rollback_fails_keeps_the_mount_and_a_later_one_drops_the_user() {
    let pg = Postgres::start(false);
    // A user created without its lease: only the write-ahead entry knows of it.
    let (mut coffer, keys, before) = crashed_before_the_lease(&pg);
    pg.stop();
    coffer.start();
    coffer.unseal(&keys);
    let refused = coffer.call("DELETE", "sys/mounts/database", None);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.errors().contains("cannot disable database/")
            && refused.errors().contains("failed to roll back"),
        "{}",
        refused.text
    );
    assert_eq!(coffer.call("GET", "sys/mounts/database", None).status, 200);
    assert_eq!(
        coffer
            .call("GET", "database/roles/grade-api-role", None)
            .status,
        200,
        "the mount still serves"
    );
    pg.resume();
    let disabled = coffer.call("DELETE", "sys/mounts/database", None);
    assert_eq!(disabled.status, 204, "{}", disabled.text);
    assert_eq!(
        pg.roles_like("v-"),
        before,
        "the disable rolled back the user that had no lease"
    );
}

#[test]
fn a_storm_of_revocations_on_a_hanging_database_leaves_workers_for_other_mounts() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 8");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION, "default_ttl": "3s"}),
    );
    // More leases than there are revocation workers, all due at about the same time.
    for _ in 0..24 {
        creds(&coffer);
    }
    pg.stop();
    let _hole = coffer_tests::BlackHole::listen(pg.port);
    std::thread::sleep(Duration::from_secs(3));
    for round in 0..3 {
        let reply = coffer.call("GET", "leasing/creds/app?ttl=1", None);
        assert_eq!(reply.status, 200, "{}", reply.text);
        let user = reply.data()["username"].as_str().unwrap().to_string();
        assert!(
            eventually(Duration::from_millis(2500), || coffer
                .list("leasing/revoked/")
                .contains(&user)),
            "round {round}: a lease on another mount was not revoked within a second of expiry:\n{}",
            coffer.log_text()
        );
    }
}

#[test]
fn passwords_in_escape_and_dollar_quoted_literals_stay_out_of_the_debug_log() {
    let pg = Postgres::start(false);
    let (coffer, _) = config_server("revoke_attempts = 3");
    let escape = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD E'{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON grades TO \"{{name}}\";";
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": escape}),
    );
    let dollar = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD $pw${{password}}$pw$; GRANT SELECT ON grades TO \"{{name}}\";";
    let role = coffer.call(
        "POST",
        "database/roles/analytics-role",
        Some(json!({"db_name": "grade-api-db", "creation_statements": dollar})),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    let (_, escape_user, escape_password, _) = creds(&coffer);
    let reply = coffer.call("GET", "database/creds/analytics-role", None);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let dollar_user = reply.data()["username"].as_str().unwrap().to_string();
    let dollar_password = reply.data()["password"].as_str().unwrap().to_string();
    for (user, password) in [
        (&escape_user, &escape_password),
        (&dollar_user, &dollar_password),
    ] {
        assert_eq!(
            pg.login(user, password, "SELECT count(*) FROM grades"),
            Ok("1".to_string())
        );
    }
    let log = coffer.log_text();
    for password in [&escape_password, &dollar_password] {
        assert!(
            !log.contains(password.as_str()),
            "an issued password reached the server log:\n{log}"
        );
    }
    assert!(
        log.contains("PASSWORD E'***'") && log.contains("PASSWORD $pw$***$pw$"),
        "the statements were not logged at debug, so this test proves nothing:\n{log}"
    );
}

/// Rewrites `grade-api-db` with a custom `username_template`, allowing every role.
fn write_config(coffer: &Coffer, pg: &Postgres, template: &str) -> coffer_tests::Reply {
    coffer.call(
        "POST",
        "database/config/grade-api-db",
        Some(json!({
            "plugin_name": "postgresql-database-plugin", "allowed_roles": "*",
            "connection_url": pg.connection_url("disable"), "username": PG_ROOT_USER,
            "password": PG_ROOT_PASSWORD, "username_template": template,
        })),
    )
}

#[test]
fn a_custom_username_template_that_renders_an_unusable_name_gets_a_400_and_creates_nothing() {
    let pg = Postgres::start(false);
    let (mut coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        &pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    // Both templates pass the config-time check: its sample names hold no `-` and fit.
    let quoting = write_config(
        &coffer,
        &pg,
        "{{random 8}}_{{.DisplayName | replace \"-\" \"'\"}}",
    );
    assert_eq!(quoting.status, 204, "{}", quoting.text);
    let roles = || pg.admin("postgres", "SELECT count(*) FROM pg_roles");
    let before = roles();

    let child = coffer.call(
        "POST",
        "auth/token/create",
        Some(json!({"display_name": "web-app"})),
    );
    assert_eq!(child.status, 200, "{}", child.text);
    let root = std::mem::replace(
        &mut coffer.token,
        child.json["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let quoted = coffer.call("GET", "database/creds/grade-api-role", None);
    assert_eq!(quoted.status, 400, "{}", quoted.text);
    assert!(
        quoted.errors().contains("token'web'app") && quoted.errors().contains("replace"),
        "{}",
        quoted.text
    );
    coffer.token = root;
    let fine = coffer.call("GET", "database/creds/grade-api-role", None);
    assert_eq!(
        fine.status, 200,
        "the root token's display name renders fine: {}",
        fine.text
    );
    let user = fine.data()["username"].as_str().unwrap().to_string();
    assert!(user.ends_with("_root") && user.len() == 13, "{user}");
    let revoked = coffer.call(
        "PUT",
        "sys/leases/revoke",
        Some(json!({"lease_id": fine.json["lease_id"]})),
    );
    assert_eq!(revoked.status, 204, "{}", revoked.text);

    let long_role = "analytics-role-whose-name-is-longer-than-any-postgresql-identifier";
    let long = write_config(&coffer, &pg, "{{random 8}}_{{.RoleName}}");
    assert_eq!(long.status, 204, "{}", long.text);
    let role = coffer.call(
        "POST",
        &format!("database/roles/{long_role}"),
        Some(json!({"db_name": "grade-api-db", "creation_statements": CREATION})),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    let too_long = coffer.call("GET", &format!("database/creds/{long_role}"), None);
    assert_eq!(too_long.status, 400, "{}", too_long.text);
    assert!(
        too_long.errors().contains("63 bytes") && too_long.errors().contains("truncate"),
        "{}",
        too_long.text
    );
    assert_eq!(roles(), before, "a refused name created a user");
}

/// A server with static role `analytics-role` for `static_account`, rotated every
/// `period`. Its rotation commits the new password and then takes a moment longer: the
/// window in which another rotation could overtake it, made wide enough to hit.
fn slowly_rotating_static_role(pg: &Postgres, period: &str) -> Coffer {
    let (coffer, _) = config_server("revoke_attempts = 3");
    configure(
        &coffer,
        pg,
        "disable",
        json!({"db_name": "grade-api-db", "creation_statements": CREATION}),
    );
    pg.admin(
        "postgres",
        "CREATE ROLE static_account WITH LOGIN PASSWORD 'initial'",
    );
    let role = coffer.call(
        "POST",
        "database/static-roles/analytics-role",
        Some(json!({
            "db_name": "grade-api-db", "username": "static_account", "rotation_period": period,
            "rotation_statements": [
                "ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'",
                "COMMIT",
                "SELECT pg_sleep(random() / 10)",
            ],
        })),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    coffer
}

#[test]
fn concurrent_rotations_of_a_static_role_leave_the_stored_password_in_force() {
    const CONTENDERS: usize = 8;
    let pg = Postgres::start(false);
    let coffer = slowly_rotating_static_role(&pg, "1h");
    for round in 0..3 {
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let calls: Vec<_> = (0..CONTENDERS)
                .map(|_| {
                    scope.spawn(|| {
                        coffer
                            .call("POST", "database/rotate-role/analytics-role", None)
                            .status
                    })
                })
                .collect();
            calls.into_iter().map(|call| call.join().unwrap()).collect()
        });
        assert!(
            statuses.iter().all(|status| *status == 204),
            "round {round}: every rotation waits its turn and succeeds: {statuses:?}\n{}",
            coffer.log_text()
        );
        let creds = coffer.call("GET", "database/static-creds/analytics-role", None);
        assert_eq!(creds.status, 200, "{}", creds.text);
        let password = creds.data()["password"].as_str().unwrap();
        assert_eq!(
            pg.login("static_account", password, "SELECT 1"),
            Ok("1".to_string()),
            "round {round}: the password Coffer hands out is not the one in PostgreSQL"
        );
    }
}

#[test]
fn manual_rotations_racing_the_periodic_one_leave_the_stored_password_in_force() {
    let pg = Postgres::start(false);
    // Due at every maintenance pass (every 5 s).
    let coffer = slowly_rotating_static_role(&pg, "5s");
    let first = coffer.call("GET", "database/static-roles/analytics-role", None);
    let first_rotation = first.data()["last_vault_rotation"].clone();
    let until = std::time::Instant::now() + Duration::from_secs(12);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut statuses = Vec::new();
                    while std::time::Instant::now() < until {
                        statuses.push(
                            coffer
                                .call("POST", "database/rotate-role/analytics-role", None)
                                .status,
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    statuses
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|caller| caller.join().unwrap())
            .collect()
    });
    assert!(
        statuses.iter().all(|status| *status == 204),
        "{statuses:?}\n{}",
        coffer.log_text()
    );
    // The update waits for any rotation in flight, and after it nothing is due.
    let quiet = coffer.call(
        "POST",
        "database/static-roles/analytics-role",
        Some(json!({"rotation_period": "1h"})),
    );
    assert_eq!(quiet.status, 204, "{}", quiet.text);
    let creds = coffer.call("GET", "database/static-creds/analytics-role", None);
    assert_eq!(creds.status, 200, "{}", creds.text);
    assert_ne!(creds.data()["last_vault_rotation"], first_rotation);
    assert_eq!(
        pg.login(
            "static_account",
            creds.data()["password"].as_str().unwrap(),
            "SELECT 1"
        ),
        Ok("1".to_string()),
        "the password Coffer hands out is not the one in PostgreSQL:\n{}",
        coffer.log_text()
    );
    assert!(
        !coffer.log_text().contains("rotation failed"),
        "{}",
        coffer.log_text()
    );
}
