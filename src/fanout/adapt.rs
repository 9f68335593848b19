//! Which rendition a viewer should get: its link's estimate against the renditions' rates.
//!
//! Down at once when the estimate falls below the rendition's rate (the encoders send a
//! little under their target, which is the headroom); up one step once the estimate has held
//! [`UP_HEADROOM`] above the next rendition's rate for [`UP_HOLD`]. An up-switch followed
//! by a down-switch within [`UP_TRIAL`] failed: the next try waits twice as long (up to
//! [`MAX_BACKOFF`]), so a link that cannot carry a rendition is not made to freeze on it
//! every few seconds.

use std::time::{Duration, Instant};

/// A rendition fits once the estimate is this much above its rate.
pub const UP_HEADROOM: f64 = 1.25;
/// How long the estimate must hold before moving up.
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// A down-switch this soon after an up-switch means the up-switch failed.
pub const UP_TRIAL: Duration = Duration::from_secs(8);
/// Longest wait before trying a rendition that failed again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a viewer's connection tells about its link, read once per frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Bits per second the link is estimated to carry; 0 while unknown.
    pub estimate_bps: u64,
    /// Bits per second the connection's pacer releases at; 0 if it has none.
    pub pacing_bps: u64,
    /// Packets waiting in the connection's pacer.
    pub queued_packets: usize,
}

impl Reading {
    /// How long the packets waiting in the pacer take to leave.
    pub fn queue_delay(&self) -> Duration {
        if self.pacing_bps == 0 {
            return Duration::ZERO;
        }
        let bits = (self.queued_packets * super::RTP_MTU * 8) as f64;
        Duration::from_secs_f64(bits / self.pacing_bps as f64)
    }
}

/// Which rendition a viewer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// Whatever its link carries (the default).
    #[default]
    Auto,
    /// This one (0 is the best), or lower while the link cannot carry it.
    Fixed(usize),
}

/// A viewer's wishes: `?rendition=`, `?max_bitrate=` in its WHEP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preference {
    pub choice: Choice,
    /// Never a rendition above this rate.
    pub max_bitrate: Option<u32>,
    /// Keep the fixed rendition even when the estimate says it does not fit.
    pub insist: bool,
}

/// One viewer's rendition choice over time. Pure: the caller passes the time and reading.
#[derive(Debug)]
pub struct Selector {
    /// The renditions' rates, best first.
    rates: Vec<u32>,
    /// The best rendition the viewer's preference allows.
    ceiling: usize,
    /// The rendition the viewer is on (or switching to).
    current: usize,
    /// Since when the estimate has fitted the next rendition up.
    above_since: Option<Instant>,
    /// No up-switch before this.
    not_before: Instant,
    backoff: Duration,
    last_up: Option<Instant>,
    insist: bool,
}

impl Selector {
    /// A selector for renditions at `rates` (best first); starts on the best one `estimate`
    /// fits (the best allowed when nothing is known).
    pub fn new(rates: Vec<u32>, preference: Preference, estimate_bps: u64, now: Instant) -> Self {
        let last = rates.len().saturating_sub(1);
        let mut ceiling = match preference.choice {
            Choice::Auto => 0,
            Choice::Fixed(i) => i.min(last),
        };
        if let Some(max) = preference.max_bitrate {
            let capped = rates.iter().position(|&r| r <= max).unwrap_or(last);
            ceiling = ceiling.max(capped);
        }
        let insist = preference.insist && matches!(preference.choice, Choice::Fixed(_));
        let mut s = Self {
            rates,
            ceiling,
            current: ceiling,
            above_since: None,
            not_before: now + UP_HOLD,
            backoff: UP_HOLD,
            last_up: None,
            insist,
        };
        if estimate_bps > 0 && !insist {
            s.current = s.best_fitting(estimate_bps as f64, 1.0);
        }
        s
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The best allowed rendition whose rate × `headroom` the estimate covers (else the
    /// lowest).
    fn best_fitting(&self, estimate: f64, headroom: f64) -> usize {
        (self.ceiling..self.rates.len())
            .find(|&i| self.rates[i] as f64 * headroom <= estimate)
            .unwrap_or(self.rates.len().saturating_sub(1))
    }

    /// The rendition to be on now. `congested` (the pacer holds too much) moves down one
    /// step whatever the estimate says.
    pub fn pick(&mut self, now: Instant, estimate_bps: u64, congested: bool) -> usize {
        if self.insist || self.rates.len() < 2 {
            return self.current;
        }
        let estimate = estimate_bps as f64;
        let last = self.rates.len() - 1;
        let mut down_to = None;
        if estimate_bps > 0 && estimate < self.rates[self.current] as f64 {
            down_to = Some(self.best_fitting(estimate, 1.0).max(self.current + 1).min(last));
        }
        if congested && self.current < last {
            down_to = Some(down_to.unwrap_or(self.current + 1).max(self.current + 1));
        }
        if let Some(to) = down_to.filter(|&to| to > self.current) {
            self.down(now, to);
            return self.current;
        }
        if self
            .last_up
            .is_some_and(|t| now.duration_since(t) >= UP_TRIAL)
        {
            // The last step up held: the next one may come as soon as the estimate allows.
            self.last_up = None;
            self.backoff = UP_HOLD;
        }
        if self.current > self.ceiling
            && estimate >= self.rates[self.current - 1] as f64 * UP_HEADROOM
        {
            let since = *self.above_since.get_or_insert(now);
            if now.duration_since(since) >= UP_HOLD && now >= self.not_before {
                self.current -= 1;
                self.last_up = Some(now);
                self.above_since = None;
            }
        } else {
            self.above_since = None;
        }
        self.current
    }

    fn down(&mut self, now: Instant, to: usize) {
        self.current = to;
        self.above_since = None;
        if self
            .last_up
            .take()
            .is_some_and(|t| now.duration_since(t) < UP_TRIAL)
        {
            // The step up did not hold: wait longer before the next try.
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.not_before = now + self.backoff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u32; 3] = [2_500_000, 625_000, 208_000];

    fn selector(pref: Preference, estimate: u64, t0: Instant) -> Selector {
        Selector::new(LADDER.to_vec(), pref, estimate, t0)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_viewer_starts_on_what_its_estimate_fits_and_moves_down_at_once() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 3_000_000, t0);
        assert_eq!(s.current(), 0);
        // The link turns out to carry 900 kbit/s: straight to the rendition that fits.
        assert_eq!(s.pick(at(t0, 500), 900_000, false), 1);
        assert_eq!(s.pick(at(t0, 600), 150_000, false), 2);
        // Nothing lower to go to.
        assert_eq!(s.pick(at(t0, 700), 50_000, true), 2);
    }

    #[test]
    fn moving_up_needs_the_estimate_to_hold_above_the_next_rate() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 700_000, t0);
        assert_eq!(s.current(), 1);
        let enough = (2_500_000.0 * UP_HEADROOM) as u64;
        let mut t = 0;
        // Above for less than UP_HOLD, then a dip: no switch.
        while t < 1500 {
            assert_eq!(s.pick(at(t0, t), enough, false), 1);
            t += 100;
        }
        assert_eq!(s.pick(at(t0, t), enough - 1, false), 1);
        let start = t + 100;
        t = start;
        while s.pick(at(t0, t), enough, false) == 1 {
            t += 100;
            assert!(t < start + 5000, "never moved up");
        }
        assert!(t - start >= UP_HOLD.as_millis() as u64, "up after {} ms", t - start);
    }

    #[test]
    fn a_failed_step_up_makes_the_next_try_wait_longer() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 700_000, t0);
        let enough = (2_500_000.0 * UP_HEADROOM) as u64;
        let mut t = 0;
        let mut waits = Vec::new();
        let mut since_down = 0;
        while waits.len() < 4 {
            let on = s.pick(at(t0, t), enough, false);
            if on == 0 {
                waits.push(t - since_down);
                // It does not hold: congestion one second later.
                t += 1000;
                assert_eq!(s.pick(at(t0, t), enough, true), 1);
                since_down = t;
            }
            t += 100;
        }
        assert!(waits.windows(2).skip(1).all(|w| w[1] >= w[0] * 2 - 200), "{waits:?}");
    }

    #[test]
    fn preferences_cap_and_fix_the_rendition() {
        let t0 = Instant::now();
        let capped = Preference {
            max_bitrate: Some(800_000),
            ..Default::default()
        };
        let mut s = selector(capped, 10_000_000, t0);
        assert_eq!(s.current(), 1);
        assert_eq!(s.pick(at(t0, 10_000), 10_000_000, false), 1, "never above the cap");
        let fixed = Preference {
            choice: Choice::Fixed(1),
            ..Default::default()
        };
        let mut s = selector(fixed, 10_000_000, t0);
        assert_eq!(s.current(), 1);
        assert_eq!(s.pick(at(t0, 100), 100_000, false), 2, "still follows the link down");
        let insisting = Preference {
            choice: Choice::Fixed(0),
            insist: true,
            ..Default::default()
        };
        let mut s = selector(insisting, 100_000, t0);
        assert_eq!(s.pick(at(t0, 100), 100_000, true), 0);
    }

    #[test]
    fn the_pacer_queue_is_read_as_time() {
        let r = Reading {
            estimate_bps: 1_000_000,
            pacing_bps: 960_000,
            queued_packets: 100,
        };
        assert_eq!(r.queue_delay(), Duration::from_secs(1));
        assert_eq!(Reading::default().queue_delay(), Duration::ZERO);
    }
}
