//! Budget alarms (Ranch's alarms): a callback when the number of served
//! connections reaches a threshold, at most once per cooldown.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::budget::Budget;

/// What a budget alarm reports (see [`Builder::alarm`](crate::Builder::alarm)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alarm {
    /// Connections active when it rang.
    pub active: usize,
    /// The threshold it was set for.
    pub threshold: usize,
    /// The budget (slots in service) at that moment.
    pub budget: usize,
}

/// The callback type of a budget alarm.
pub(crate) type AlarmCallback = Arc<dyn Fn(&Alarm) + Send + Sync>;

/// A budget alarm as configured.
#[derive(Clone)]
pub(crate) struct AlarmConfig {
    pub(crate) threshold: usize,
    pub(crate) cooldown: Duration,
    pub(crate) callback: AlarmCallback,
}

impl fmt::Debug for AlarmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlarmConfig")
            .field("threshold", &self.threshold)
            .field("cooldown", &self.cooldown)
            .finish_non_exhaustive()
    }
}

/// A budget alarm's settings and when it last rang, shared by the loops.
pub(crate) struct AlarmState {
    config: AlarmConfig,
    last: Mutex<Option<Instant>>,
}

impl fmt::Debug for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlarmState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AlarmState {
    pub(crate) fn new(config: AlarmConfig) -> Self {
        AlarmState {
            config,
            last: Mutex::new(None),
        }
    }

    /// Calls the callback if the budget's active count is at or above the
    /// threshold and the cooldown has passed since it last rang. Runs on the
    /// loop's thread; a panic in the callback is caught and logged.
    pub(crate) fn check(&self, budget: &Budget) {
        let active = budget.active();
        let threshold = self.config.threshold;
        if active < threshold {
            return;
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.config.cooldown) {
                return;
            }
            *last = Some(Instant::now());
        }
        let event = Alarm {
            active,
            threshold,
            budget: budget.limit(),
        };
        log::warn!("budget alarm: {active} connections active (threshold {threshold})");
        let callback = &self.config.callback;
        if catch_unwind(AssertUnwindSafe(|| callback(&event))).is_err() {
            log::error!("the budget alarm callback panicked");
        }
    }
}
