//! Crash points for tests: `LASH_FAILPOINT=<name>` makes the agent abort at
//! the named point, the way a crash or SIGKILL would, so the tests can check
//! what a restart finds and finishes. Unset (always, outside tests), `hit`
//! costs one environment lookup the first time and a load after.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("LASH_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
