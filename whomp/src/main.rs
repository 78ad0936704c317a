//! The whomp binary: everything is in the `whomp` library and `server::daemon::main`.

fn main() -> std::process::ExitCode {
    server::daemon::main::<whomp::Whomp>()
}
