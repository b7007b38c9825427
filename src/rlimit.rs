//! The open-file limit (`RLIMIT_NOFILE`): what a configuration needs, and
//! raising the soft limit at start-up.
//!
//! Every listener and every client costs a descriptor. A server that runs
//! out does not fail loudly: new connections wait in the kernel's backlog
//! until a descriptor is free, so joins stall while nothing is logged. The
//! binary therefore raises the soft limit to the hard one, the most an
//! unprivileged process may take, and refuses to start if even that cannot
//! cover [`needed`] (unless told to go on), the way Redis compares its
//! `maxclients` with the limit at start-up.

use std::io;

/// The open-file limits of the process, as `getrlimit` reports them;
/// [`libc::RLIM_INFINITY`] means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The limit in force.
    pub soft: libc::rlim_t,
    /// The most the soft limit may be raised to.
    pub hard: libc::rlim_t,
}

/// Descriptors held apart from listeners and worker clients: 3 for stdio,
/// 1 for the poll, 2 for the signal pipe, and 26 for the short-lived rest,
/// portal clients (each answered and closed within one turn of the loop)
/// and strays on worker ports waiting for their refusal. A few dozen of
/// those at one moment is already a busy server; more simply wait their
/// turn in the backlog.
pub const MARGIN: libc::rlim_t = 32;

/// Descriptors a server with `workers` worker ports needs when every port
/// is busy: its listeners (the portal and one per worker), two clients per
/// worker port, and [`MARGIN`]. Two per port, because a port has one client
/// in a session but can briefly have a second: the next client, handed the
/// port as soon as it is free, connecting while the previous one's socket
/// is still being closed, or a stranger presenting a passcode.
pub fn needed(workers: usize) -> libc::rlim_t {
    let workers = workers as libc::rlim_t;
    let listeners = workers + 1;
    listeners + 2 * workers + MARGIN
}

/// The process's current limits.
pub fn current() -> io::Result<Limits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the one struct it is given, which
    // outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limits {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Sets the soft limit to the hard one, which any process may do, and
/// returns the limits now in force.
pub fn raise_soft_to_hard(limits: Limits) -> io::Result<Limits> {
    let raised = libc::rlimit {
        rlim_cur: limits.hard,
        rlim_max: limits.hard,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    current()
}

/// A configuration that needs more descriptors than the limit allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The `--workers` asked for.
    pub workers: usize,
    /// What they need, by [`needed`].
    pub needed: libc::rlim_t,
    /// The limits in force.
    pub limits: Limits,
}

impl std::fmt::Display for Shortfall {
    /// One line: what is needed and what the limit is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--workers {} needs {} open files, but the limit is {}",
            self.workers,
            self.needed,
            show(self.limits.soft)
        )?;
        if self.limits.hard != self.limits.soft {
            write!(f, " (hard limit {})", show(self.limits.hard))?;
        }
        Ok(())
    }
}

/// `Ok` if the soft limit covers [`needed`] for `workers`.
pub fn check(workers: usize, limits: Limits) -> Result<(), Shortfall> {
    let needed = needed(workers);
    if needed <= limits.soft {
        return Ok(());
    }
    Err(Shortfall {
        workers,
        needed,
        limits,
    })
}

fn show(limit: libc::rlim_t) -> String {
    if limit == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        limit.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_three_per_worker_and_the_margin() {
        assert_eq!(needed(2), 3 + 4 + 32);
        assert_eq!(needed(4), 45);
        assert_eq!(needed(200), 201 + 400 + 32);
        assert_eq!(needed(20_000), 60_033);
    }

    #[test]
    fn check_says_what_is_missing_on_one_line() {
        let limits = |soft, hard| Limits { soft, hard };
        assert_eq!(check(6, limits(51, 51)), Ok(()));
        let unlimited = limits(libc::RLIM_INFINITY, libc::RLIM_INFINITY);
        assert_eq!(check(6, unlimited), Ok(()));
        assert_eq!(
            check(6, limits(50, 50)).unwrap_err().to_string(),
            "--workers 6 needs 51 open files, but the limit is 50"
        );
        assert_eq!(
            check(200, limits(300, libc::RLIM_INFINITY))
                .unwrap_err()
                .to_string(),
            "--workers 200 needs 633 open files, but the limit is 300 (hard limit unlimited)"
        );
    }

    #[test]
    fn the_limits_can_be_read() {
        let limits = current().unwrap();
        assert!(limits.soft <= limits.hard, "{limits:?}");
    }
}
