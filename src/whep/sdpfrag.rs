//! `application/trickle-ice-sdpfrag` (RFC 8840): the body of a WHEP `PATCH`.
//!
//! A fragment carries the sender's ICE credentials and, per media section (`m=` + `a=mid`),
//! candidates and `a=end-of-candidates`. Clients send one to trickle candidates (same
//! credentials as the offer) or to restart ICE (new credentials, `If-Match: "*"`); the server
//! answers a restart with its own fragment.
//!
//! Only what ICE needs is read; other attribute lines are ignored, as RFC 8840 allows.

use std::fmt::Write;

/// Largest fragment accepted: a browser sends a few candidates per PATCH (< 1 KiB).
pub const MAX_FRAGMENT_BYTES: usize = 16 * 1024;
/// Most candidates in one fragment; a peer has a handful of interfaces.
pub(crate) const MAX_CANDIDATES: usize = 64;

/// A parsed fragment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `(mid, candidate attribute value without the leading "a=")`, in order.
    pub candidates: Vec<(Option<String>, String)>,
    pub end_of_candidates: bool,
}

/// Why a fragment was refused; the text is sent back to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("the fragment is not UTF-8 text")]
    NotText,
    #[error("line {0} is not an SDP line ('x=value'): {1:?}")]
    BadLine(usize, String),
    #[error("line {0}: a candidate needs at least 8 fields (foundation component transport priority address port typ type)")]
    BadCandidate(usize),
    #[error("more than {MAX_CANDIDATES} candidates in one fragment")]
    TooMany,
    #[error("ice-ufrag and ice-pwd must come together (RFC 8839), got only one")]
    HalfCredentials,
    #[error("{0} must be {1} ice-chars (letters, digits, '+', '/'), RFC 8839")]
    BadCredentials(&'static str, &'static str),
    #[error("a session takes at most {0} trickled candidates per ICE generation")]
    TooManyTrickled(usize),
    #[error("candidate '{0}' cannot be used: {1}")]
    Unusable(String, String),
}

impl Fragment {
    pub fn parse(body: &[u8]) -> Result<Self, FragmentError> {
        let text = std::str::from_utf8(body).map_err(|_| FragmentError::NotText)?;
        let mut frag = Fragment::default();
        let mut mid: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let n = i + 1;
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(FragmentError::BadLine(n, truncate(line)));
            }
            let value = &line[2..];
            match bytes[0] {
                b'm' => mid = None,
                b'a' => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    match name {
                        "ice-ufrag" => frag.ufrag = Some(arg.trim().to_owned()),
                        "ice-pwd" => frag.pwd = Some(arg.trim().to_owned()),
                        "mid" => mid = Some(arg.trim().to_owned()),
                        "end-of-candidates" => frag.end_of_candidates = true,
                        "candidate" => {
                            if arg.split_ascii_whitespace().count() < 8 {
                                return Err(FragmentError::BadCandidate(n));
                            }
                            if frag.candidates.len() == MAX_CANDIDATES {
                                return Err(FragmentError::TooMany);
                            }
                            frag.candidates.push((mid.clone(), value.trim().to_owned()));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if frag.ufrag.is_some() != frag.pwd.is_some() {
            return Err(FragmentError::HalfCredentials);
        }
        // RFC 8839 5.4: ice-chars only; ufrag 4-256, pwd 22-256 characters.
        let ice_chars = |v: &str| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        if let Some(u) = &frag.ufrag {
            if !(4..=256).contains(&u.len()) || !ice_chars(u) {
                return Err(FragmentError::BadCredentials("ice-ufrag", "4-256"));
            }
        }
        if let Some(p) = &frag.pwd {
            if !(22..=256).contains(&p.len()) || !ice_chars(p) {
                return Err(FragmentError::BadCredentials("ice-pwd", "22-256"));
            }
        }
        Ok(frag)
    }

    /// Checks that every candidate parses as an ICE candidate (RFC 8839 5.1).
    pub fn check_candidates(&self) -> Result<(), FragmentError> {
        for (_, c) in &self.candidates {
            let value = c.strip_prefix("candidate:").unwrap_or(c);
            if let Err(e) = rtc::ice::candidate::unmarshal_candidate(value) {
                // The crate's error may quote a field whole: bound what goes back.
                return Err(FragmentError::Unusable(
                    c.chars().take(80).collect(),
                    e.to_string().chars().take(120).collect(),
                ));
            }
        }
        Ok(())
    }
}

/// The ICE part of a full SDP (the server's answer): credentials and candidates.
#[derive(Debug, Default)]
pub struct IceParams {
    pub ufrag: String,
    pub pwd: String,
    pub candidates: Vec<String>,
}

impl IceParams {
    /// Reads the first media section's ICE credentials and every candidate of `sdp`.
    pub fn from_sdp(sdp: &str) -> Self {
        let mut p = IceParams::default();
        for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                if p.ufrag.is_empty() {
                    p.ufrag = v.trim().to_owned();
                }
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                if p.pwd.is_empty() {
                    p.pwd = v.trim().to_owned();
                }
            } else if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") && !p.candidates.iter().any(|x| x == c) {
                    p.candidates.push(c.to_owned());
                }
            }
        }
        p
    }

    /// The fragment answering an ICE restart: credentials, then for the bundled media
    /// section (`m_line`, `mid`) every candidate and end-of-candidates. CRLF line ends, as
    /// in SDP (some clients match on them).
    pub fn to_fragment(&self, m_line: &str, mid: &str) -> String {
        let mut s = String::with_capacity(256 + self.candidates.len() * 96);
        let _ = write!(
            s,
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n{m_line}\r\na=mid:{mid}\r\n",
            self.ufrag, self.pwd
        );
        for c in &self.candidates {
            let _ = write!(s, "a={c}\r\n");
        }
        s.push_str("a=end-of-candidates\r\n");
        s
    }
}

/// `offer` with new ICE credentials and without candidates: the offer an ICE restart
/// implies (RFC 8840 section 4.4: the fragment replaces the ICE part of the session).
pub fn restarted_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut s = String::with_capacity(offer.len());
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("a=ice-ufrag:") {
            let _ = write!(s, "a=ice-ufrag:{ufrag}\r\n");
        } else if line.starts_with("a=ice-pwd:") {
            let _ = write!(s, "a=ice-pwd:{pwd}\r\n");
        } else if !(line.starts_with("a=candidate:") || line == "a=end-of-candidates") {
            s.push_str(line);
            s.push_str("\r\n");
        }
    }
    s
}

/// The `m=` line and `a=mid` value of the first media section of `sdp`.
pub fn first_media(sdp: &str) -> Option<(String, String)> {
    let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
    let m = lines.find(|l| l.starts_with("m="))?.to_owned();
    let mid = lines
        .take_while(|l| !l.starts_with("m="))
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap_or("0")
        .to_owned();
    Some((m, mid))
}

/// The ICE username fragment of the first media section (or the session) of `sdp`.
pub fn ufrag_of(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .map(|v| v.trim().to_owned())
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKLE: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn parses_a_trickle_fragment() {
        let f = Fragment::parse(TRICKLE.as_bytes()).expect("valid");
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(f.candidates[0].0.as_deref(), Some("0"));
        assert!(f.candidates[0].1.starts_with("candidate:1387637174 1 udp"));
        assert!(f.end_of_candidates);
    }

    #[test]
    fn refuses_what_is_not_a_fragment() {
        assert!(matches!(
            Fragment::parse(b"hello world"),
            Err(FragmentError::BadLine(1, _))
        ));
        assert_eq!(
            Fragment::parse(b"a=candidate:1 1 udp 5"),
            Err(FragmentError::BadCandidate(1))
        );
        assert_eq!(
            Fragment::parse(b"a=ice-ufrag:x\n"),
            Err(FragmentError::HalfCredentials)
        );
        assert_eq!(Fragment::parse(&[0xff, 0xfe]), Err(FragmentError::NotText));
        let many = "a=candidate:1 1 udp 1 192.0.2.1 1 typ host\n".repeat(MAX_CANDIDATES + 1);
        assert_eq!(
            Fragment::parse(many.as_bytes()),
            Err(FragmentError::TooMany)
        );
    }

    #[test]
    fn an_unusable_candidate_is_not_quoted_whole() {
        let huge = "9".repeat(10_000);
        let body = format!("a=candidate:1 1 udp 1 192.0.2.1 1 typ {huge}\r\n");
        let frag = Fragment::parse(body.as_bytes()).expect("eight fields");
        let e = frag.check_candidates().expect_err("no such candidate type");
        assert!(matches!(e, FragmentError::Unusable(..)), "{e:?}");
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    }

    #[test]
    fn restart_offer_swaps_credentials_and_drops_candidates() {
        let offer = "v=0\r\na=ice-ufrag:oldu\r\na=ice-pwd:oldpwdoldpwdoldpwdoldpwd\r\nm=video 9 X 96\r\na=mid:0\r\n\
                     a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\na=end-of-candidates\r\n";
        let new = restarted_offer(offer, "new", "newpwd");
        assert!(new.contains("a=ice-ufrag:new\r\n") && new.contains("a=ice-pwd:newpwd\r\n"));
        assert!(!new.contains("old") && !new.contains("candidate"));
        assert_eq!(
            first_media(&new),
            Some(("m=video 9 X 96".into(), "0".into()))
        );
        let params = IceParams::from_sdp(offer);
        let frag = params.to_fragment("m=video 9 X 96", "0");
        let back = Fragment::parse(frag.as_bytes()).expect("our own fragment parses");
        assert_eq!(back.ufrag.as_deref(), Some("oldu"));
        assert!(matches!(
            Fragment::parse(b"a=ice-ufrag:x y\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"),
            Err(FragmentError::BadCredentials("ice-ufrag", _))
        ));
        assert!(matches!(
            Fragment::parse(b"a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n"),
            Err(FragmentError::BadCredentials("ice-pwd", _))
        ));
        assert_eq!(back.candidates.len(), 1);
        assert!(back.end_of_candidates);
    }
}
