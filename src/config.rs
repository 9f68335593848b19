//! Settings shared by every stage: picture size, frame rate, bit rate, keyframe interval.
//!
//! Each value type parses from the text a user types on the command line (`1280x720`,
//! `2500k`, `4M`) and refuses values the encoder cannot take, with a message that says
//! what to type instead.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A picture size in pixels. H.264 with 4:2:0 chroma needs both sides even.
/// The default is 1280x720.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// A setting the encoder cannot take; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("'{0}' is not a size; write WIDTHxHEIGHT, e.g. 1280x720")]
    NotASize(String),
    #[error(
        "{width}x{height} has an odd side; H.264 (4:2:0) needs even width and height, e.g. {}x{}",
        width & !1,
        height & !1
    )]
    OddSize { width: u32, height: u32 },
    #[error(
        "{width}x{height} is too small; each side must be at least {}",
        Size::MIN
    )]
    TooSmall { width: u32, height: u32 },
    #[error("{width}x{height} is too large; the encoder stops at 3840x2160")]
    TooLarge { width: u32, height: u32 },
    #[error("'{0}' is not a bit rate; write e.g. 2500k, 4M or 800000")]
    NotABitrate(String),
    #[error("bit rate {0} is out of range; use between 10k and 100M")]
    BitrateOutOfRange(String),
    #[error("--fps {0} is out of range; use 1 to 120")]
    FpsOutOfRange(u32),
    #[error("--keyint {0} is out of range; use seconds between 0.1 and 600")]
    KeyintOutOfRange(f32),
    #[error("'{0}' is not a rendition; write WIDTHxHEIGHT@RATE, e.g. 640x360@700k")]
    NotARung(String),
    #[error("the ladder '{0}' is empty or has more than {max} renditions; write e.g. 1280x720@2500k,640x360@700k, or none", max = Ladder::MAX_RUNGS)]
    LadderLength(String),
    #[error("the ladder has two renditions at {0}; give each a different bit rate")]
    LadderDuplicate(Bitrate),
}

impl Size {
    /// Smallest and largest sizes OpenH264 encodes (level 5.2 tops out at 4K).
    pub const MIN: u32 = 16;
    pub const MAX_LONG: u32 = 3840;
    pub const MAX_SHORT: u32 = 2160;

    /// A checked size: even, and within what the encoder accepts.
    pub fn new(width: u32, height: u32) -> Result<Self, ConfigError> {
        if width % 2 != 0 || height % 2 != 0 {
            return Err(ConfigError::OddSize { width, height });
        }
        if width < Self::MIN || height < Self::MIN {
            return Err(ConfigError::TooSmall { width, height });
        }
        let (long, short) = (width.max(height), width.min(height));
        if long > Self::MAX_LONG || short > Self::MAX_SHORT {
            return Err(ConfigError::TooLarge { width, height });
        }
        Ok(Self { width, height })
    }

    /// Pixels in the picture.
    pub fn area(self) -> usize {
        self.width as usize * self.height as usize
    }
}

impl Default for Size {
    fn default() -> Self {
        Size {
            width: 1280,
            height: 720,
        }
    }
}

impl FromStr for Size {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::NotASize(s.to_owned());
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let w = w.trim().parse().map_err(|_| bad())?;
        let h = h.trim().parse().map_err(|_| bad())?;
        Size::new(w, h)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A bit rate in bits per second, written as `2500000`, `2500k` or `2.5M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bitrate(pub u32);

impl Bitrate {
    pub fn bps(self) -> u32 {
        self.0
    }
}

impl FromStr for Bitrate {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::NotABitrate(s.to_owned());
        let t = s.trim();
        let (num, mul) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1e3),
            Some((i, 'm' | 'M')) => (&t[..i], 1e6),
            _ => (t, 1.0),
        };
        let v: f64 = num.trim().parse().map_err(|_| bad())?;
        let bps = v * mul;
        if !(10_000.0..=100_000_000.0).contains(&bps) {
            return Err(ConfigError::BitrateOutOfRange(s.to_owned()));
        }
        Ok(Bitrate(bps as u32))
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1_000_000 == 0 {
            write!(f, "{}M", self.0 / 1_000_000)
        } else if self.0 % 1000 == 0 {
            write!(f, "{}k", self.0 / 1000)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// How a rendition's picture size follows the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RungSize {
    /// The source's size divided by this (1 = the source's own size), rounded down to even.
    Fraction(u32),
    /// Always this size, whatever the source's.
    Fixed(Size),
}

/// One rendition of a stream: a picture size and the bit rate it is encoded at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub size: RungSize,
    pub bitrate: Bitrate,
}

impl Rung {
    /// The picture size for a source of `source` size.
    pub fn size_for(&self, source: Size) -> Size {
        match self.size {
            RungSize::Fixed(s) => s,
            RungSize::Fraction(d) => {
                let side = |v: u32| ((v / d.max(1)) & !1).max(Size::MIN);
                Size {
                    width: side(source.width),
                    height: side(source.height),
                }
            }
        }
    }
}

impl FromStr for Rung {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (size, rate) = s
            .trim()
            .split_once('@')
            .ok_or_else(|| ConfigError::NotARung(s.to_owned()))?;
        Ok(Rung {
            size: RungSize::Fixed(size.parse()?),
            bitrate: rate.parse()?,
        })
    }
}

/// The renditions a stream is encoded in, best first. Viewers move between them as their
/// links allow; each is encoded once for everyone who receives it, and not at all while
/// nobody does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Ladder {
    /// The source's size at the stream's bit rate B, then half the size at about B/4 and a
    /// quarter at about B/12 (fewer for small streams: no rendition under 90 lines).
    #[default]
    Auto,
    /// Only the source's size at the stream's bit rate (`--ladder none`).
    Single,
    /// These renditions (`--ladder 1280x720@2500k,640x360@700k`).
    Fixed(Vec<Rung>),
}

impl Ladder {
    /// Most renditions a ladder may have.
    pub const MAX_RUNGS: usize = 6;
    /// Lines below which [`Ladder::Auto`] adds no rendition.
    const MIN_AUTO_HEIGHT: u32 = 90;

    /// The renditions for a source of `size` encoded at `bitrate`, highest bit rate first.
    pub fn rungs(&self, size: Size, bitrate: Bitrate) -> Vec<Rung> {
        let top = Rung {
            size: RungSize::Fraction(1),
            bitrate,
        };
        match self {
            Ladder::Single => vec![top],
            Ladder::Fixed(rungs) => rungs.clone(),
            Ladder::Auto => {
                let mut rungs = vec![top];
                for (divisor, rate_divisor) in [(2, 4), (4, 12)] {
                    if size.height / divisor < Self::MIN_AUTO_HEIGHT {
                        break;
                    }
                    // Rounded to whole kbit/s, and never under what the encoder takes.
                    let bps = (bitrate.bps() / rate_divisor / 1000 * 1000).max(10_000);
                    rungs.push(Rung {
                        size: RungSize::Fraction(divisor),
                        bitrate: Bitrate(bps),
                    });
                }
                rungs
            }
        }
    }
}

impl FromStr for Ladder {
    type Err = ConfigError;
    /// `auto`, `none`, or renditions separated by `,` (or `/`, inside `--stream`).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "auto" | "" => return Ok(Ladder::Auto),
            "none" | "single" | "off" => return Ok(Ladder::Single),
            _ => {}
        }
        let mut rungs = s
            .split([',', '/'])
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Rung>, _>>()?;
        if rungs.is_empty() || rungs.len() > Self::MAX_RUNGS {
            return Err(ConfigError::LadderLength(s.to_owned()));
        }
        rungs.sort_by_key(|r| std::cmp::Reverse(r.bitrate.bps()));
        if let Some(w) = rungs.windows(2).find(|w| w[0].bitrate == w[1].bitrate) {
            return Err(ConfigError::LadderDuplicate(w[0].bitrate));
        }
        Ok(Ladder::Fixed(rungs))
    }
}

/// Everything the encoder stage needs to know about one stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeSettings {
    pub size: Size,
    /// Frames per second the source is paced at (1..=120).
    pub fps: u32,
    pub bitrate: Bitrate,
    /// Seconds between periodic IDR frames.
    pub keyint: f32,
}

impl EncodeSettings {
    /// Checks the values that are not checked by their own types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=120).contains(&self.fps) {
            return Err(ConfigError::FpsOutOfRange(self.fps));
        }
        if !(self.keyint > 0.0 && self.keyint <= 600.0) {
            return Err(ConfigError::KeyintOutOfRange(self.keyint));
        }
        Ok(())
    }

    /// Time between two frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps as f64)
    }

    /// Frames between two periodic IDRs (at least 1).
    pub fn keyint_frames(&self) -> u32 {
        ((self.keyint * self.fps as f32).round() as u32).max(1)
    }
}

impl Default for EncodeSettings {
    fn default() -> Self {
        Self {
            size: Size {
                width: 1280,
                height: 720,
            },
            fps: 30,
            bitrate: Bitrate(2_500_000),
            keyint: 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_odd_sides_are_refused() {
        assert_eq!("1280x720".parse::<Size>().unwrap().area(), 1280 * 720);
        let err = "13x7".parse::<Size>().unwrap_err();
        assert!(err.to_string().contains("even"), "{err}");
        assert!("12x".parse::<Size>().is_err());
        assert!("4000x4000".parse::<Size>().is_err());
    }

    #[test]
    fn bitrates_take_suffixes() {
        assert_eq!("2500k".parse::<Bitrate>().unwrap().bps(), 2_500_000);
        assert_eq!("2.5M".parse::<Bitrate>().unwrap().bps(), 2_500_000);
        assert_eq!("800000".parse::<Bitrate>().unwrap().bps(), 800_000);
        assert!("fast".parse::<Bitrate>().is_err());
        assert!("1".parse::<Bitrate>().is_err());
        assert_eq!(Bitrate(2_500_000).to_string(), "2500k");
    }

    #[test]
    fn the_default_ladder_halves_and_quarters_the_picture_and_stops_for_small_ones() {
        let hd = Size::new(1280, 720).unwrap();
        let rungs = Ladder::Auto.rungs(hd, Bitrate(2_500_000));
        let got: Vec<(Size, u32)> = rungs
            .iter()
            .map(|r| (r.size_for(hd), r.bitrate.bps()))
            .collect();
        assert_eq!(
            got,
            [
                (hd, 2_500_000),
                (Size::new(640, 360).unwrap(), 625_000),
                (Size::new(320, 180).unwrap(), 208_000)
            ]
        );
        let small = Size::new(320, 240).unwrap();
        assert_eq!(Ladder::Auto.rungs(small, Bitrate(500_000)).len(), 2);
        assert_eq!(
            Ladder::Auto
                .rungs(Size::new(160, 120).unwrap(), Bitrate(500_000))
                .len(),
            1
        );
        // Odd halves are rounded down to even.
        let odd = Size::new(1366, 766).unwrap();
        assert_eq!(
            Rung {
                size: RungSize::Fraction(2),
                bitrate: Bitrate(1000)
            }
            .size_for(odd),
            Size::new(682, 382).unwrap()
        );
        assert_eq!(Ladder::Single.rungs(hd, Bitrate(2_500_000)).len(), 1);
    }

    #[test]
    fn ladders_parse_sorted_and_refuse_what_cannot_be_encoded() {
        let l: Ladder = "640x360@700k,1280x720@2500k/320x180@200k".parse().unwrap();
        let Ladder::Fixed(rungs) = l else {
            panic!("fixed")
        };
        let rates: Vec<u32> = rungs.iter().map(|r| r.bitrate.bps()).collect();
        assert_eq!(rates, [2_500_000, 700_000, 200_000]);
        assert_eq!("none".parse::<Ladder>().unwrap(), Ladder::Single);
        assert_eq!("auto".parse::<Ladder>().unwrap(), Ladder::Auto);
        for bad in [
            "640x360",
            "641x360@700k",
            "640x360@fast",
            "a@b",
            "640x360@1k",
        ] {
            let e = bad.parse::<Ladder>().unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        let dup = "640x360@700k,320x180@700k".parse::<Ladder>().unwrap_err();
        assert!(dup.to_string().contains("700k"), "{dup}");
        let many = ["160x90@100k"; 7].join(",");
        assert!(matches!(
            many.parse::<Ladder>(),
            Err(ConfigError::LadderLength(_))
        ));
    }
}
