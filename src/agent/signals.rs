//! SIGTERM and SIGINT end the agent at once, from the signal handler itself.
//!
//! The agent keeps nothing that needs flushing (every log line is written whole as it is made),
//! so exiting in the handler is correct, and it is the only way to stop within a second whatever
//! the main thread is blocked in: a request, a name lookup, a backoff wait. Installing a handler
//! also makes the signals work for PID 1 in a container, where the kernel gives them no default
//! action.

use nix::libc::c_int;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::log::{self, Level};

pub fn exit_on_termination() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_termination),
        SaFlags::SA_RESTART,
        SigSet::all(),
    );
    // SAFETY: the handler only formats into a stack buffer, calls write(2) and _exit(2), all
    // async-signal-safe.
    unsafe {
        sigaction(Signal::SIGTERM, &action)?;
        sigaction(Signal::SIGINT, &action)?;
    }
    Ok(())
}

extern "C" fn on_termination(signal: c_int) {
    let message = if signal == Signal::SIGINT as c_int {
        "Received SIGINT, shutting down"
    } else {
        "Received SIGTERM, shutting down"
    };
    log::event_from_signal_handler(Level::Info, message);
    // SAFETY: _exit(2) is async-signal-safe and ends the process without running anything else.
    unsafe { nix::libc::_exit(0) }
}
