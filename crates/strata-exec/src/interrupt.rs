//! Ctrl-C as a request to cancel, not a kill: the flag a build or a step
//! watches (see [`crate::RunSpec::cancel`]) is set from a SIGINT handler,
//! so running steps are killed, their mounts and scratch directories go,
//! and the caller can say `cancelled` and exit 130. A second Ctrl-C kills
//! at once (the handler resets itself to the default action).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The flag handed out by [`cancel_on_sigint`]; set by the handler.
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// Whether SIGINT arrived (the cancel flag is also set by build failures).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The exit status of a process stopped by SIGINT, as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

extern "C" fn on_sigint(_: libc::c_int) {
    // Only atomic stores: async-signal-safe. OnceLock::get is an atomic
    // load once initialised, which it is before the handler is installed.
    INTERRUPTED.store(true, Ordering::SeqCst);
    if let Some(flag) = CANCEL.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// Installs the SIGINT handler and returns the flag it sets, to pass as the
/// cancel flag of a build or step.
pub fn cancel_on_sigint() -> Result<Arc<AtomicBool>, nix::Error> {
    let flag = CANCEL
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::SA_RESETHAND | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only performs atomic loads and stores, which are
    // async-signal-safe, and touches no lock or allocation.
    unsafe { sigaction(Signal::SIGINT, &action) }?;
    Ok(flag)
}

/// Whether SIGINT arrived since [`cancel_on_sigint`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
