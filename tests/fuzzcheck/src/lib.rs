//! Keeps the fuzz targets in `fuzz/` building and running.
//!
//! The fuzz crate is outside the workspace (it needs nightly flags and libFuzzer), so nothing
//! else would notice when a change to `httpmsg`, `netguard` or `config` breaks a target, or when
//! a seed in `fuzz/corpus/` starts to crash one. This package's one test builds every target with
//! `cargo fuzz build` and runs each briefly over its committed corpus. It builds the `dev`
//! profile (still with sanitizer and coverage instrumentation), which compiles in about half the
//! time of the release build that long fuzzing runs use; 500 runs do not need the speed.
//!
//! It needs `cargo-fuzz` (installed by `.ci/setup/fuzz.sh`). Without it the test prints
//! `SKIPPED` and passes, except in CI (`CI=true`), where a missing tool is a failure.
//!
//! The nested cargo uses its own target directory, `fuzz/target`, so that it never waits on the
//! lock of the outer `cargo test`. Stable Rust accepts cargo-fuzz's nightly flags under
//! `RUSTC_BOOTSTRAP=1`.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    /// Every target in `fuzz/fuzz_targets`, each with a seed corpus in `fuzz/corpus/<target>`.
    const TARGETS: [&str; 4] = [
        "httpmsg_parse",
        "json_envelope",
        "url_target",
        "config_load",
    ];

    /// Mutations per target after its seeds have run: enough to catch a target that crashes at
    /// once, few enough for CI.
    const RUNS: &str = "-runs=500";

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
    }

    /// `cargo fuzz ARGS` in `fuzz/`, with the environment the nested build needs.
    fn cargo_fuzz(args: &[&str]) -> Command {
        let dir = fuzz_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("fuzz")
            .args(args)
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .env_remove("CARGO_MANIFEST_DIR");
        cmd
    }

    /// Runs `cmd` and fails the test with its output unless it succeeds.
    fn run(what: &str, mut cmd: Command) -> Output {
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{}\n{}",
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        );
        output
    }

    /// The last lines of a command's output, where the error is.
    fn tail(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    #[test]
    fn fuzz_targets_build_and_survive_their_corpus() {
        let present = cargo_fuzz(&["--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "cargo-fuzz is not installed; .ci/setup/fuzz.sh installs it"
            );
            eprintln!("SKIPPED: cargo-fuzz is not installed (bash .ci/setup/fuzz.sh installs it)");
            return;
        }

        run("cargo fuzz build --dev", cargo_fuzz(&["build", "--dev"]));

        let corpus_root = fuzz_dir().join("corpus");
        for target in TARGETS {
            let seeds = corpus_root.join(target);
            let seed_count = std::fs::read_dir(&seeds)
                .map(|entries| entries.count())
                .unwrap_or(0);
            assert!(seed_count > 0, "{target}: no seeds in {}", seeds.display());
            // New inputs and any crash go to a scratch directory, never into the tree.
            let scratch = tempfile::tempdir().unwrap();
            let artifacts = format!("-artifact_prefix={}/", scratch.path().display());
            let fresh = scratch.path().join("corpus");
            std::fs::create_dir(&fresh).unwrap();
            let output = run(
                &format!("cargo fuzz run {target}"),
                cargo_fuzz(&[
                    "run",
                    "--dev",
                    target,
                    fresh.to_str().unwrap(),
                    seeds.to_str().unwrap(),
                    "--",
                    RUNS,
                    &artifacts,
                ]),
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("Done "),
                "{target}: libFuzzer did not finish its runs:\n{}",
                tail(&output.stderr)
            );
        }
    }
}
