//! The whimp binary: everything is in the `whimp` library, started by `daemon::main`.

fn main() -> std::process::ExitCode {
    daemon::main::<whimp::Whimp>()
}
