//! The whomp binary: parse the command line, load the config, run (see the `whomp` library).

use std::process::ExitCode;

use server::cli::{self, exit, Command};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("whomp: {e}\n\n{}", cli::usage("whomp"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let config_path = match &command {
        Command::Help => {
            print!(
                "whomp {}: webhook out\n\n{}",
                env!("CARGO_PKG_VERSION"),
                cli::usage("whomp")
            );
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("whomp {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run { config }
        | Command::CheckConfig { config }
        | Command::Spool { config, .. } => config.clone(),
    };
    let config = match config::load_whomp(&config_path) {
        Ok(config) => config,
        Err(e) => {
            eprint!("{e}");
            if !e.to_string().ends_with('\n') {
                eprintln!();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    match command {
        Command::CheckConfig { .. } => {
            // Rules, DNS and policy are checked the way the daemon builds them.
            if let Err(e) = whomp::live::Live::build(&config) {
                eprintln!("{}: {e}", config_path.display());
                return ExitCode::from(exit::USAGE);
            }
            println!(
                "{}: ok ({} signing keys, {} tokens)",
                config_path.display(),
                config.signing.keys.len(),
                config.auth.tokens.len()
            );
            ExitCode::SUCCESS
        }
        Command::Spool { action, json, .. } => {
            let code = cli::spool_command(
                &action,
                json,
                &config.spool.dir,
                config.admin.addr,
                &whomp::describe,
                &mut std::io::stdout().lock(),
            );
            ExitCode::from(code)
        }
        _ => run(config_path, config),
    }
}

fn run(config_path: std::path::PathBuf, config: config::whomp::Config) -> ExitCode {
    if let Err(e) = telemetry::init_logging(&config.log, c"whomp") {
        eprintln!("whomp: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("whomp: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(whomp::serve(config_path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "whomp cannot start");
            eprintln!("whomp: {e}");
            ExitCode::from(match e {
                whomp::StartError::Locked(_) | whomp::StartError::Bind { .. } => exit::UNAVAILABLE,
                whomp::StartError::Spool(_) => exit::IO,
                whomp::StartError::Config(_) => exit::USAGE,
                whomp::StartError::Runtime(_) => 70,
            })
        }
    }
}
