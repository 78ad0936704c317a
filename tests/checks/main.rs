//! Checks of what ships around the two daemons rather than inside them: the files in deploy/
//! (validated with the tools an operator's host would run them with), the static build, the
//! operator docs against the configs and alerts they describe, and the walk-through in
//! examples/, run end to end against the real binaries.
//!
//! The external tools (systemd-analyze, promtool, curl) come from Debian packages that
//! `.ci/setup/deploy.sh` installs. When one is missing the test fails under `CI=true` and prints
//! SKIPPED elsewhere, so that a developer without them can still run the rest.

mod deploy;
mod docs;
mod support;
mod walkthrough;
