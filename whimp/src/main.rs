//! The whimp binary: parse the command line, load the config, run (see the `whimp` library).

use std::process::ExitCode;

use server::cli::{self, exit, Command};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("whimp: {e}\n\n{}", cli::usage("whimp"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let config_path = match &command {
        Command::Help => {
            print!(
                "whimp {}: webhook in\n\n{}",
                env!("CARGO_PKG_VERSION"),
                cli::usage("whimp")
            );
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("whimp {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run { config }
        | Command::CheckConfig { config }
        | Command::Spool { config, .. } => config.clone(),
    };
    let config = match config::load_whimp(&config_path) {
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
            println!(
                "{}: ok ({} routes)",
                config_path.display(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Command::Spool { action, json, .. } => {
            let code = cli::spool_command(
                &action,
                json,
                &config.spool.dir,
                config.admin.addr,
                &whimp::describe,
                &mut std::io::stdout().lock(),
            );
            ExitCode::from(code)
        }
        _ => run(config_path, config),
    }
}

fn run(config_path: std::path::PathBuf, config: config::whimp::Config) -> ExitCode {
    if let Err(e) = telemetry::init_logging(&config.log, c"whimp") {
        eprintln!("whimp: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("whimp: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(whimp::run(config_path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "whimp cannot start");
            eprintln!("whimp: {e}");
            ExitCode::from(match e {
                whimp::StartError::Locked(_) | whimp::StartError::Bind { .. } => exit::UNAVAILABLE,
                whimp::StartError::Spool(_) => exit::IO,
                whimp::StartError::Config(_) => exit::USAGE,
                whimp::StartError::Runtime(_) => 70,
            })
        }
    }
}
