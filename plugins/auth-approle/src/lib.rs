//! The AppRole auth engine: machines log in with a role ID (which names a role, like a
//! user name) and a secret ID (a credential issued for that role), and the host mints a
//! token with the role's `token_*` parameters.
//!
//! What it owns: roles, the role-ID index, secret IDs and their accessors, all in the
//! mount's storage (layout in [`store`]). What it must never do: store or log a secret ID
//! in clear, or return one except in the answer that creates it. Secret IDs are kept as
//! HMAC-SHA-256 under a random key per role, as Vault keeps them, so a role deleted and
//! created again under the same name can never be reached with the old secret IDs.
//!
//! Each call runs in a fresh instance and concurrent calls run in parallel instances, so
//! a secret ID's remaining uses are counted down with the host's `compare-and-write`
//! (`storage::Batch::commit_if`): of two logins racing for the last use, one wins.

pub mod login;
pub mod role;
pub mod secret_id;
pub mod store;

use coffer_sdk::prelude::*;

/// A role name, as Vault accepts it: word characters, with `-`, `.` and `@` inside.
const ROLE_NAME: &str = r"(?P<role_name>\w(?:[\w.@-]*\w)?)";

/// The words of every refused login whose role ID or secret ID is wrong, unknown or
/// expired (Vault's): the caller must not learn which of the two was wrong.
pub const INVALID_CREDENTIALS: &str = "invalid role or secret ID";

/// The `role_name` captured from a role's paths. Lower-cased, as Vault treats role names
/// (`role/Web` and `role/web` are one role).
fn role_name() -> FieldSchema {
    Field::lowercase("role_name", "Name of the role (case-insensitive).")
}

/// The path table with its handlers (what `describe` reports is what `handle` routes).
fn routes() -> SpecBuilder {
    spec("approle")
        .help(
            "Log in with a role ID and a secret ID. Roles set the policies and limits of the \
             tokens; secret IDs can be bound to CIDR blocks, limited in uses and expire.",
        )
        .unauthenticated("login")
        .path(
            path("login")
                .field(Field::string(
                    "role_id",
                    "The role ID of the role to log in as.",
                ))
                .field(Field::string(
                    "secret_id",
                    "A secret ID issued for that role.",
                ))
                .synopsis("Issue a token for a role ID and secret ID.")
                .on(Operation::Update, login::login),
        )
        .path(
            path("role/?")
                .synopsis("List the roles.")
                .on(Operation::List, role::list),
        )
        .path(
            path(&format!("role/{ROLE_NAME}"))
                .field(role_name())
                .fields(role::fields())
                .synopsis("Create, read, update or delete a role.")
                .on(Operation::Read, role::read)
                .on(Operation::Create, role::write)
                .on(Operation::Update, role::write)
                .on(Operation::Delete, role::delete),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/role-id"))
                .field(role_name())
                .field(Field::string("role_id", "A custom role ID for the role."))
                .synopsis("Read the role's role ID, or set a custom one.")
                .on(Operation::Read, role::read_role_id)
                .on(Operation::Update, role::write_role_id),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/secret-id/?"))
                .field(role_name())
                .fields(secret_id::issue_fields())
                .synopsis("Issue a secret ID for the role, or list its accessors.")
                .on(Operation::Update, secret_id::generate)
                .on(Operation::List, secret_id::list),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/custom-secret-id"))
                .field(role_name())
                .field(Field::string("secret_id", "The secret ID to register."))
                .fields(secret_id::issue_fields())
                .synopsis("Register a secret ID chosen by the caller.")
                .on(Operation::Update, secret_id::custom),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/secret-id/lookup"))
                .field(role_name())
                .field(Field::string("secret_id", "The secret ID to look up."))
                .synopsis("Read a secret ID's properties.")
                .on(Operation::Update, secret_id::lookup),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/secret-id/destroy"))
                .field(role_name())
                .field(Field::string("secret_id", "The secret ID to destroy."))
                .synopsis("Destroy a secret ID.")
                .on(Operation::Update, secret_id::destroy)
                .on(Operation::Delete, secret_id::destroy),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/secret-id-accessor/lookup"))
                .field(role_name())
                .field(Field::string(
                    "secret_id_accessor",
                    "The accessor of a secret ID.",
                ))
                .synopsis("Read a secret ID's properties by its accessor.")
                .on(Operation::Update, secret_id::lookup_accessor),
        )
        .path(
            path(&format!("role/{ROLE_NAME}/secret-id-accessor/destroy"))
                .field(role_name())
                .field(Field::string(
                    "secret_id_accessor",
                    "The accessor of a secret ID.",
                ))
                .synopsis("Destroy a secret ID by its accessor.")
                .on(Operation::Update, secret_id::destroy_accessor)
                .on(Operation::Delete, secret_id::destroy_accessor),
        )
        .path(
            path("tidy/secret-id")
                .synopsis("Remove expired secret IDs and accessors without a secret ID.")
                .on(Operation::Update, secret_id::tidy_request),
        )
}

/// The engine.
struct AppRole;

impl Engine for AppRole {
    fn describe() -> BackendSpec {
        routes().build()
    }

    fn handle(req: Request) -> Result<Response, EngineError> {
        routes().dispatch(req)
    }

    fn renew(lease: LeaseRef) -> Result<(), EngineError> {
        login::renew(&lease)
    }

    fn periodic() -> Result<(), EngineError> {
        secret_id::periodic_tidy()
    }
}

coffer_sdk::engine!(AppRole);
