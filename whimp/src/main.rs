//! The whimp binary: everything is in the `whimp` library and `server::daemon::main`.

fn main() -> std::process::ExitCode {
    server::daemon::main::<whimp::Whimp>()
}
