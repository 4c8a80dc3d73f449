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
    /// what it was granted in every schema and the database, then `DROP ROLE IF EXISTS`.
    /// A role that is already gone is success.
    pub fn drop_user(&self, name: &str) -> Result<(), EngineError> {
        // One query: does the role exist, which database is this, where was it granted.
        let rows = self
            .connection
            .query(
                "SELECT current_database()::text, g.nspname::text \
                 FROM (SELECT oid FROM pg_roles WHERE rolname = $1) r \
                 LEFT JOIN LATERAL (SELECT DISTINCT n.nspname FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = r.oid) \
                   OR EXISTS (SELECT 1 FROM pg_attribute t, aclexplode(t.attacl) b \
                     WHERE t.attrelid = c.oid AND t.attacl IS NOT NULL AND b.grantee = r.oid)) g ON true",
                &[SqlValue::Text(name.to_string())],
            )
            .map_err(sql_error)?;
        if rows.is_empty() {
            return Ok(());
        }
        // Needs pg_signal_backend; without it sessions end when they next reconnect.
        let _ = self.connection.batch(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}' AND pid <> pg_backend_pid()",
            name.replace('\'', "''")
        ));
        let quoted = quote_ident(name);
        let mut statements = Vec::new();
        let mut database = None;
        for row in &rows {
            if let Some(SqlValue::Text(db)) = row.first() {
                database = Some(db.clone());
            }
            if let Some(SqlValue::Text(schema)) = row
                .get(1)
                .filter(|s| !matches!(s, SqlValue::Text(s) if s == "public"))
            {
                let schema = quote_ident(schema);
                statements.push(format!(
                    "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {schema} FROM {quoted}"
                ));
                statements.push(format!("REVOKE USAGE ON SCHEMA {schema} FROM {quoted}"));
            }
        }
        statements.push(format!(
            "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM {quoted}"
        ));
        statements.push(format!(
            "REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"
        ));
        statements.push(format!("REVOKE USAGE ON SCHEMA public FROM {quoted}"));
        if let Some(db) = database {
            statements.push(format!(
                "REVOKE CONNECT ON DATABASE {} FROM {quoted}",
                quote_ident(&db)
            ));
        }
        statements.push(format!("DROP ROLE IF EXISTS {quoted}"));
        self.run(statements)
    }
}
