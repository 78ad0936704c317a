//! The whomp binary: everything is in the `whomp` library, started by `daemon::main`.

fn main() -> std::process::ExitCode {
    daemon::main::<whomp::Whomp>()
}
