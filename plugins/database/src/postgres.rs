//! What the engine does to PostgreSQL, through the host's `sql` capability (dbplugin v5
//! shape: create, renew, drop, set password). Every change that touches grants runs in one
//! transaction behind a shared advisory lock, because concurrent GRANT/REVOKE on the same
//! tables fails with "tuple concurrently updated".

use coffer_sdk::EngineError;
use coffer_sdk::sql::{Connection, HostError, SqlValue, connect};

use crate::template::{quote_ident, render, split_statements};

/// Advisory lock key serializing grant changes made by Coffer in one database ("Coff").
const GRANT_LOCK: i64 = 0x436f_6666;

/// Vault's default renew statement.
pub const DEFAULT_RENEW: &str = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';";
/// Vault's default password-change statement (root rotation and static roles).
pub const DEFAULT_ROTATION: &str = "ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';";

/// Turns a host SQL error into what the API caller sees.
pub use coffer_sdk::storage::host_error as sql_error;

/// An open connection to one configured database.
pub struct Database {
    connection: Connection,
}

impl Database {
    /// Connects to `dsn` through the host (which checks it against the mount's grants).
    pub fn open(dsn: &str, max_connections: u32) -> Result<Self, HostError> {
        Ok(Self {
            connection: connect(dsn, max_connections)?,
        })
    }

    /// Checks the connection works.
    pub fn ping(&self) -> Result<(), EngineError> {
        self.connection
            .query("SELECT 1", &[])
            .map(|_| ())
            .map_err(sql_error)
    }

    /// Runs rendered statements in one transaction behind the grant lock.
    pub fn run(&self, statements: Vec<String>) -> Result<(), EngineError> {
        let mut list = vec![(
            format!("SELECT pg_advisory_xact_lock({GRANT_LOCK})"),
            Vec::new(),
        )];
        list.extend(statements.into_iter().map(|s| (s, Vec::new())));
        self.connection.transaction(&list).map_err(sql_error)
    }

    /// Renders a template list with `vars` and runs it in one transaction.
    pub fn run_templates(
        &self,
        templates: &[String],
        vars: &[(&str, &str)],
    ) -> Result<(), EngineError> {
        let statements = split_statements(templates)
            .iter()
            .map(|s| render(s, vars))
            .collect::<Vec<_>>();
        if statements.is_empty() {
            return Err(EngineError::InvalidRequest(
                "no statements to run".to_string(),
            ));
        }
        self.run(statements)
    }

    /// Whether a role exists.
    pub fn role_exists(&self, name: &str) -> Result<bool, EngineError> {
        let rows = self
            .connection
            .query(
                "SELECT 1 FROM pg_roles WHERE rolname = $1",
                &[SqlValue::Text(name.to_string())],
            )
            .map_err(sql_error)?;
        Ok(!rows.is_empty())
    }

    /// Vault's default PostgreSQL revocation: end the user's sessions (best effort), revoke
    /// what it was granted, then `DROP ROLE IF EXISTS`. A role that is already gone is
    /// success.
    ///
    /// What the role holds comes from `pg_shdepend`, PostgreSQL's own record of which
    /// objects name a role in their ACLs (indexed by role), so the cost does not grow with
    /// the number of tables in the database, and only the objects actually granted are
    /// touched: usually two round trips (this lookup, then one transaction).
    pub fn drop_user(&self, name: &str) -> Result<(), EngineError> {
        let rows = self
            .connection
            .query(
                "SELECT current_database()::text, \
                   (SELECT count(*) FROM pg_stat_activity WHERE usename = $1)::int8, \
                   g.kind, g.object \
                 FROM (SELECT oid FROM pg_roles WHERE rolname = $1) r \
                 LEFT JOIN LATERAL ( \
                   SELECT CASE WHEN d.classid = 'pg_class'::regclass THEN \
                            CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END \
                          WHEN d.classid = 'pg_namespace'::regclass THEN 'schema' \
                          ELSE 'database' END AS kind, \
                     CASE WHEN d.classid = 'pg_class'::regclass \
                            THEN quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
                          WHEN d.classid = 'pg_namespace'::regclass THEN quote_ident(s.nspname) \
                          ELSE quote_ident(current_database()) END AS object \
                   FROM pg_shdepend d \
                   LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid \
                   LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
                   LEFT JOIN pg_namespace s ON d.classid = 'pg_namespace'::regclass AND s.oid = d.objid \
                   WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid AND d.deptype = 'a' \
                     AND ((d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                           AND d.classid IN ('pg_class'::regclass, 'pg_namespace'::regclass)) \
                       OR (d.dbid = 0 AND d.classid = 'pg_database'::regclass \
                           AND d.objid = (SELECT oid FROM pg_database WHERE datname = current_database()))) \
                   GROUP BY 1, 2 \
                 ) g ON true",
                &[SqlValue::Text(name.to_string())],
            )
            .map_err(sql_error)?;
        if rows.is_empty() {
            return Ok(());
        }
        let sessions = rows.first().and_then(|row| match row.get(1) {
            Some(SqlValue::Int64(count)) => Some(*count),
            _ => None,
        });
        if sessions != Some(0) {
            // Needs pg_signal_backend; without it sessions end when they next reconnect.
            let _ = self.connection.batch(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}' AND pid <> pg_backend_pid()",
                name.replace('\'', "''")
            ));
        }
        let quoted = quote_ident(name);
        let granted = |kind: &str| -> Vec<String> {
            rows.iter()
                .filter(|row| matches!(row.get(2), Some(SqlValue::Text(k)) if k == kind))
                .filter_map(|row| match row.get(3) {
                    Some(SqlValue::Text(object)) => Some(object.clone()),
                    _ => None,
                })
                .collect()
        };
        let mut statements = Vec::new();
        for (kind, keyword) in [
            ("table", "TABLE"),
            ("sequence", "SEQUENCE"),
            ("schema", "SCHEMA"),
            ("database", "DATABASE"),
        ] {
            let objects = granted(kind);
            if !objects.is_empty() {
                statements.push(format!(
                    "REVOKE ALL PRIVILEGES ON {keyword} {} FROM {quoted}",
                    objects.join(", ")
                ));
            }
        }
        statements.push(format!("DROP ROLE IF EXISTS {quoted}"));
        self.run(statements)
    }
}
