//! The `coffer` binary: `coffer server ...` runs the server; every other verb is a client.

use coffer_host::{cli, server};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    if args.first().map(String::as_str) == Some("server") {
        let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        let parsed = cli::Args::parse(args.get(1..).unwrap_or_default());
        let server_args = server::ServerArgs {
            dev: parsed.bool("dev"),
            config: parsed.flag("config").map(Into::into),
            dev_root_token_id: parsed.flag("dev-root-token-id").map(str::to_string),
            dev_listen_address: parsed.flag("dev-listen-address").map(str::to_string),
            plugin_dir: parsed.flag("plugin-dir").map(Into::into),
        };
        if let Err(error) = runtime.block_on(server::run(server_args)) {
            eprintln!("Error: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    match runtime.block_on(cli::run(&args)) {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
        }
        // `-output-policy` ends the command before any request, successfully.
        Err(error) if error.code == 0 => println!("{}", error.message),
        Err(error) => {
            eprintln!("{}", error.message);
            std::process::exit(error.code);
        }
    }
}
