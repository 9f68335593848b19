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
}
