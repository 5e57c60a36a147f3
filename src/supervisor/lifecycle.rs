//! The pure rules of supervision: the operator-driven lifecycle state machine and
//! the restart budget (exponential backoff with a cap, at most N restarts in a
//! window). No I/O, no clocks of its own: time is passed in, so tests need no
//! sleeping. The loop in `super` applies these decisions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Restart;

/// A plugin's lifecycle status, set by the operator and persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Verified,
    Installed,
    Active,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Installed => "installed",
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "verified" => Status::Verified,
            "installed" => Status::Installed,
            "active" => Status::Active,
            "disabled" => Status::Disabled,
            _ => return None,
        })
    }
}

/// What an operator asks of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    Activate,
    Disable,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Activate => "activate",
            Action::Disable => "disable",
        }
    }

    fn target(self) -> Status {
        match self {
            Action::Install => Status::Installed,
            Action::Activate => Status::Active,
            Action::Disable => Status::Disabled,
        }
    }

    /// The statuses this action may start from.
    fn sources(self) -> &'static [Status] {
        match self {
            Action::Install => &[Status::Verified],
            Action::Activate => &[Status::Installed, Status::Disabled],
            Action::Disable => &[Status::Installed, Status::Active],
        }
    }
}

/// Decides a transition. `bundle_problem` is why the plugin's bundle is not
/// present and verified right now (`None` when it is): installing and activating
/// need it; disabling never does.
pub fn transition(
    id: &str,
    from: Status,
    action: Action,
    bundle_problem: Option<&str>,
) -> Result<Status, String> {
    let to = action.target();
    if !action.sources().contains(&from) {
        let allowed: Vec<&str> = action.sources().iter().map(|s| s.as_str()).collect();
        // A new bundle is `verified`: the step an operator most often misses.
        let hint = if action == Action::Activate && from == Status::Verified {
            format!("; install it first: warden ctl install {id}")
        } else {
            String::new()
        };
        return Err(format!(
            "cannot {} plugin {id}: it is {}, and {} is allowed only from {}{hint}",
            action.as_str(),
            from.as_str(),
            action.as_str(),
            allowed.join(" or ")
        ));
    }
    if action != Action::Disable {
        if let Some(why) = bundle_problem {
            return Err(format!(
                "cannot {} plugin {id}: its bundle is not present and verified ({why}); it can only be disabled",
                action.as_str()
            ));
        }
    }
    Ok(to)
}

/// The restart budget of one plugin.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    recent: VecDeque<Instant>,
    backoff: Option<Duration>,
}

impl Budget {
    /// After an unplanned exit at `now` of an instance that had run for `uptime`:
    /// `Some(delay)` to restart after, or `None` when the budget is spent (the
    /// plugin is then `failed`).
    pub fn on_exit(
        &mut self,
        now: Instant,
        uptime: Duration,
        policy: &Restart,
    ) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            self.recent.pop_front();
        }
        if uptime >= policy.window {
            // It ran well for a whole window: start the backoff over.
            self.backoff = None;
        }
        if self.recent.len() as u32 >= policy.max_restarts {
            return None;
        }
        self.recent.push_back(now);
        let next = match self.backoff {
            None => policy.initial_backoff,
            Some(b) => (b * 2).min(policy.max_backoff),
        };
        self.backoff = Some(next);
        Some(next)
    }

    /// Restarts within `window` before `now` (those older are forgotten only at
    /// the next exit, so they are not counted here).
    pub fn count(&self, now: Instant, window: Duration) -> usize {
        self.recent
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= window)
            .count()
    }

    /// An operator's restart: a fresh budget.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.backoff = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activate_of_a_new_plugin_says_to_install_it_first() {
        let e = transition("notes", Status::Verified, Action::Activate, None).unwrap_err();
        assert!(
            e.ends_with("; install it first: warden ctl install notes"),
            "{e}"
        );
        // Other refusals name no step that would not help.
        let e = transition("notes", Status::Active, Action::Activate, None).unwrap_err();
        assert!(!e.contains("install it first"), "{e}");
    }

    #[test]
    fn transitions() {
        use Action::*;
        use Status::*;
        assert_eq!(transition("p", Verified, Install, None), Ok(Installed));
        assert_eq!(transition("p", Installed, Activate, None), Ok(Active));
        assert_eq!(transition("p", Active, Disable, None), Ok(Disabled));
        assert_eq!(transition("p", Disabled, Activate, None), Ok(Active));
        assert_eq!(transition("p", Installed, Disable, None), Ok(Disabled));
        assert_eq!(
            transition("p", Verified, Activate, None).unwrap_err(),
            "cannot activate plugin p: it is verified, and activate is allowed only from installed or disabled; install it first: warden ctl install p"
        );
        assert!(transition("p", Active, Install, None).is_err());
        assert!(transition("p", Disabled, Disable, None).is_err());
        assert!(transition("p", Active, Activate, None).is_err());
        assert_eq!(
            transition("p", Disabled, Activate, Some("bundle missing")).unwrap_err(),
            "cannot activate plugin p: its bundle is not present and verified (bundle missing); it can only be disabled"
        );
        assert_eq!(transition("p", Active, Disable, Some("gone")), Ok(Disabled));
    }

    #[test]
    fn budget_backs_off_exponentially_then_fails() {
        let policy = Restart {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            max_restarts: 4,
            window: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let mut b = Budget::default();
        let short = Duration::from_millis(1);
        let delays: Vec<_> = (0..5)
            .map(|i| b.on_exit(t0 + Duration::from_millis(i), short, &policy))
            .collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(350)),
                Some(Duration::from_millis(350)),
                None
            ]
        );
        assert_eq!(b.count(t0 + Duration::from_millis(4), policy.window), 4);
        // Restarts older than the window are not counted, before any new exit
        // (they were, until the next exit pruned them).
        assert_eq!(b.count(t0 + Duration::from_secs(11), policy.window), 0);
        // Outside the window the budget is back.
        assert!(b
            .on_exit(t0 + Duration::from_secs(11), short, &policy)
            .is_some());
        b.reset();
        assert_eq!(b.count(t0, policy.window), 0);
    }
}
