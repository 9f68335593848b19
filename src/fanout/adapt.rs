//! Which rendition a viewer should get: its link's estimate against the renditions' rates.
//!
//! Down at once when the estimate falls below the rendition's rate (the encoders send a
//! little under their target, which is the headroom); up one step once a probe at the next
//! rendition's rate kept the estimate [`UP_HEADROOM`] above that rate for [`UP_HOLD`] (see
//! [`Selector`]). A failed probe, or a step up followed by a step down within [`UP_TRIAL`],
//! makes the next try wait twice as long (up to [`MAX_BACKOFF`]).

use std::time::{Duration, Instant};

/// A rendition fits once the estimate is this much above its rate.
pub const UP_HEADROOM: f64 = 1.25;
/// How long a probe for the next rendition must hold before moving up.
pub const UP_HOLD: Duration = Duration::from_millis(4000);
/// A down-switch this soon after an up-switch means the up-switch failed.
pub const UP_TRIAL: Duration = Duration::from_secs(8);
/// Longest wait before probing for a rendition that failed again (probes are cheap: a
/// failed one costs some queueing, not a freeze).
pub const MAX_BACKOFF: Duration = Duration::from_secs(6);

/// What a viewer's connection tells about its link, read once per frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Bits per second the link is estimated to carry; 0 while unknown.
    pub estimate_bps: u64,
    /// How long the video waiting in the connection's pacer takes to leave.
    pub pacer_delay: Duration,
    /// Queueing delay on the network path (one-way delay over its recent least).
    pub queueing: Duration,
    /// Bits per second arriving at the viewer lately; 0 when unknown.
    pub arriving_bps: u64,
}

/// How far above what arrives the estimate is believed: GCC raises its estimate while
/// nothing goes wrong, also while a viewer receives far less, so moving up takes arrivals
/// (a probe's) that bear it out.
pub const BELIEVED_ABOVE_ARRIVING: f64 = 1.5;

impl Reading {
    /// The estimate, as far as arrivals bear it out.
    pub fn proven_bps(&self) -> u64 {
        if self.arriving_bps == 0 {
            return self.estimate_bps;
        }
        self.estimate_bps
            .min((self.arriving_bps as f64 * BELIEVED_ABOVE_ARRIVING) as u64)
    }
}

impl Reading {}

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
///
/// Moving up needs proof that the link carries more than it is given: an estimate that
/// grows while a viewer receives a small rendition is only a guess (GCC raises it whenever
/// nothing goes wrong). So before moving up the viewer's sender *probes*: it pads its frames
/// with filler data ([`Selector::probe_bps`]), ramping up to the next rendition's rate over
/// [`PROBE_RAMP`]. If the estimate still covers the next rendition after [`UP_HOLD`], the
/// link carried it and the viewer moves up; if the estimate falls meanwhile, the probe
/// stops at once (it cost some queueing, not a freeze) and the next waits twice as long.
#[derive(Debug)]
pub struct Selector {
    /// The renditions' rates, best first.
    rates: Vec<u32>,
    /// The best rendition the viewer's preference allows.
    ceiling: usize,
    /// The rendition the viewer is on (or switching to).
    current: usize,
    /// Since when the sender has been probing for the next rendition up.
    probing: Option<Instant>,
    /// No probe before this.
    not_before: Instant,
    backoff: Duration,
    last_up: Option<Instant>,
    insist: bool,
}

/// How long a probe takes to ramp from the current rendition's rate to the next one's.
pub const PROBE_RAMP: Duration = Duration::from_millis(3000);
/// First wait after a failed probe or step up; it doubles with each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// A probe stops as soon as the path queues this much: the link is full (this is long before
/// a bottleneck's buffer overflows, so a failed probe costs no loss).
pub const PROBE_MAX_QUEUEING: Duration = Duration::from_millis(25);

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
            probing: None,
            not_before: now + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF,
            last_up: None,
            insist,
        };
        if estimate_bps > 0 && !insist {
            s.current = s.best_fitting(estimate_bps as f64);
        }
        s
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The best allowed rendition whose rate the estimate covers (else the lowest).
    fn best_fitting(&self, estimate: f64) -> usize {
        (self.ceiling..self.rates.len())
            .find(|&i| self.rates[i] as f64 <= estimate)
            .unwrap_or(self.rates.len().saturating_sub(1))
    }

    /// The rendition to be on now. `congested` (too much video waits in the pacer or on the
    /// path) moves down one step whatever the estimate says; queueing on the path stops a
    /// probe.
    pub fn pick(&mut self, now: Instant, link: &Reading, congested: bool) -> usize {
        if self.insist || self.rates.len() < 2 {
            return self.current;
        }
        let estimate_bps = link.estimate_bps;
        let estimate = estimate_bps as f64;
        let last = self.rates.len() - 1;
        let mut down_to = None;
        if estimate_bps > 0 && estimate < self.rates[self.current] as f64 {
            down_to = Some(self.best_fitting(estimate).max(self.current + 1).min(last));
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
            // The last step up held: the next probe may come as soon as the estimate allows.
            self.last_up = None;
            self.backoff = FIRST_BACKOFF;
        }
        let Some(next) = self.current.checked_sub(1).filter(|&n| n >= self.ceiling) else {
            self.probing = None;
            return self.current;
        };
        let wanted = self.rates[next] as f64 * UP_HEADROOM;
        let full = congested || link.queueing > PROBE_MAX_QUEUEING;
        match self.probing {
            Some(_) if full => {
                // The path queues: it carries no more than it gets now.
                self.probing = None;
                self.failed(now);
            }
            Some(since) if now.duration_since(since) >= UP_HOLD => {
                self.probing = None;
                if link.proven_bps() as f64 >= wanted {
                    self.current = next;
                    self.last_up = Some(now);
                } else {
                    // The probe's bits did not arrive at its rate.
                    self.failed(now);
                }
            }
            Some(_) => {}
            None if estimate >= wanted && !full && now >= self.not_before => {
                self.probing = Some(now)
            }
            None => {}
        }
        self.current
    }

    /// While probing: the rate the sender should send at (frames plus filler), ramping
    /// from the current rendition's rate to the next one's.
    pub fn probe_bps(&self, now: Instant) -> Option<u64> {
        let since = self.probing?;
        let from = self.rates[self.current] as f64;
        let to = self.rates[self.current.checked_sub(1)?] as f64;
        let ramp = (now.duration_since(since).as_secs_f64() / PROBE_RAMP.as_secs_f64()).min(1.0);
        Some((from + (to - from) * ramp) as u64)
    }

    fn down(&mut self, now: Instant, to: usize) {
        self.current = to;
        self.probing = None;
        if self
            .last_up
            .take()
            .is_some_and(|t| now.duration_since(t) < UP_TRIAL)
        {
            // The step up did not hold.
            self.failed(now);
        } else {
            self.not_before = now + self.backoff;
        }
    }

    /// A probe or a step up failed: wait longer before the next.
    fn failed(&mut self, now: Instant) {
        self.not_before = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u32; 3] = [2_500_000, 625_000, 208_000];

    /// A reading with this estimate that arrivals bear out.
    fn est(estimate_bps: u64) -> Reading {
        Reading {
            estimate_bps,
            ..Default::default()
        }
    }

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
        assert_eq!(s.pick(at(t0, 500), &est(900_000), false), 1);
        assert_eq!(s.pick(at(t0, 600), &est(150_000), false), 2);
        // Nothing lower to go to.
        assert_eq!(s.pick(at(t0, 700), &est(50_000), true), 2);
    }

    #[test]
    fn moving_up_takes_a_probe_that_ramps_to_the_next_rate_and_holds() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 700_000, t0);
        assert_eq!(s.current(), 1);
        let enough = (2_500_000.0 * UP_HEADROOM) as u64;
        let (mut t, mut started, mut last_probe) = (0, None, 0);
        while s.pick(at(t0, t), &est(enough), false) == 1 {
            if let Some(p) = s.probe_bps(at(t0, t)) {
                let since = *started.get_or_insert(t);
                assert!(
                    since >= FIRST_BACKOFF.as_millis() as u64,
                    "no probe right after joining"
                );
                assert!(
                    p >= last_probe && (625_000..=2_500_000).contains(&p),
                    "{p} at {t}"
                );
                last_probe = p;
            }
            t += 50;
            assert!(t < 10_000, "never moved up");
        }
        let started = started.expect("probed before moving up");
        assert_eq!(
            last_probe, 2_500_000,
            "the probe reached the next rendition's rate"
        );
        assert!(
            t - started >= UP_HOLD.as_millis() as u64,
            "up {} ms into the probe",
            t - started
        );
        assert_eq!(s.probe_bps(at(t0, t)), None, "no probe once up");
    }

    #[test]
    fn a_probe_that_makes_the_path_queue_stops_and_the_next_waits_longer() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 700_000, t0);
        let enough = (2_500_000.0 * UP_HEADROOM) as u64;
        let (mut t, mut starts) = (0, Vec::new());
        let mut probing_since = None;
        while starts.len() < 6 {
            // The link carries 1 Mbit/s: half a second into a probe the path queues.
            let falls = probing_since.is_some_and(|p| t - p >= 500);
            let reading = Reading {
                estimate_bps: enough,
                queueing: Duration::from_millis(if falls { 40 } else { 0 }),
                ..Default::default()
            };
            assert_eq!(
                s.pick(at(t0, t), &reading, false),
                1,
                "never up on this link"
            );
            match (probing_since, s.probe_bps(at(t0, t))) {
                (None, Some(_)) => {
                    probing_since = Some(t);
                    starts.push(t);
                }
                (Some(_), None) => probing_since = None,
                _ => {}
            }
            t += 50;
        }
        let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0] - 500).collect();
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
        assert!(gaps[0] >= 1900 && gaps[1] >= 3900, "{gaps:?}");
        assert!(
            *gaps.last().unwrap() <= MAX_BACKOFF.as_millis() as u64 + 100,
            "{gaps:?}"
        );
    }

    #[test]
    fn a_probe_whose_bits_do_not_arrive_at_the_next_rate_does_not_move_up() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 700_000, t0);
        // GCC's estimate says 5 Mbit/s, but what arrives stays at 1 Mbit/s.
        let reading = Reading {
            estimate_bps: 5_000_000,
            arriving_bps: 1_000_000,
            ..Default::default()
        };
        let (mut probes, mut was) = (0, false);
        for t in (0..30_000).step_by(50) {
            assert_eq!(s.pick(at(t0, t), &reading, false), 1);
            let probing = s.probe_bps(at(t0, t)).is_some();
            probes += usize::from(probing && !was);
            was = probing;
        }
        assert!(probes >= 2, "it keeps trying, with backoff: {probes}");
        // The same probe whose bits arrive moves up.
        let mut s = selector(Preference::default(), 700_000, t0);
        let arrives = Reading {
            arriving_bps: 2_500_000,
            ..reading
        };
        assert!((0..10_000)
            .step_by(50)
            .any(|t| s.pick(at(t0, t), &arrives, false) == 0));
    }

    #[test]
    fn a_step_up_that_does_not_hold_makes_the_next_wait_longer() {
        let t0 = Instant::now();
        let mut s = selector(Preference::default(), 700_000, t0);
        let enough = (2_500_000.0 * UP_HEADROOM) as u64;
        let (mut t, mut ups) = (0, Vec::new());
        while ups.len() < 4 {
            if s.pick(at(t0, t), &est(enough), false) == 0 {
                ups.push(t);
                // It does not hold: congestion one second later.
                t += 1000;
                assert_eq!(s.pick(at(t0, t), &est(enough), true), 1);
            }
            t += 50;
        }
        let gaps: Vec<u64> = ups.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|w| w[1] > w[0]), "{gaps:?}");
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
        assert_eq!(
            s.pick(at(t0, 10_000), &est(10_000_000), false),
            1,
            "never above the cap"
        );
        let fixed = Preference {
            choice: Choice::Fixed(1),
            ..Default::default()
        };
        let mut s = selector(fixed, 10_000_000, t0);
        assert_eq!(s.current(), 1);
        assert_eq!(
            s.pick(at(t0, 100), &est(100_000), false),
            2,
            "still follows the link down"
        );
        let insisting = Preference {
            choice: Choice::Fixed(0),
            insist: true,
            ..Default::default()
        };
        let mut s = selector(insisting, 100_000, t0);
        assert_eq!(s.pick(at(t0, 100), &est(100_000), true), 0);
    }
}
