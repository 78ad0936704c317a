//! Checks of what ships around the two daemons rather than inside them: the files in deploy/
//! (validated with the tools an operator's host would run them with), the static build, and the
//! walk-through in examples/, run end to end against the real binaries.
