//! ICE on real networks: STUN/TURN servers, a 1:1 NAT's public address, and a fixed UDP
//! port range, none of which the `webrtc` crate handles by itself the way a server needs.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use webrtc::peer_connection::RTCIceServer;

/// A STUN/TURN setting that cannot work; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum IceConfigError {
    #[error("'{url}' is not a STUN/TURN URL ({reason}); e.g. stun:stun.example.net:3478 or turn:turn.example.net:3478")]
    NotAUrl { url: String, reason: String },
    #[error("--stun '{0}' must start with stun: (TURN servers go in --turn)")]
    NotStun(String),
    #[error("--turn '{0}' must start with turn: or turns:")]
    NotTurn(String),
    #[error("TURN server '{0}' needs --turn-user and --turn-pass")]
    NoCredentials(String),
    #[error(
        "TURN credentials for '{0}' must be printable ASCII without spaces, quotes or backslashes"
    )]
    BadCredentials(String),
    #[error("{flag} is given {given} times for {servers} --turn servers: give it once for all, or once per server")]
    CredentialCount {
        flag: &'static str,
        given: usize,
        servers: usize,
    },
    #[error("'{0}' is not a UDP port range; write MIN-MAX, e.g. 50000-50100")]
    PortRange(String),
}

/// The STUN and TURN servers of a command line: `stun` URLs, `turn` URLs, and TURN
/// usernames and passwords, each given once for all TURN servers or once per server.
pub fn servers(
    stun: &[String],
    turn: &[String],
    users: &[String],
    passes: &[String],
) -> Result<Vec<IceServer>, IceConfigError> {
    let mut servers = Vec::new();
    for url in stun {
        if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
            return Err(IceConfigError::NotStun(url.clone()));
        }
        servers.push(IceServer::new(url, None, None)?);
    }
    for (flag, v) in [("--turn-user", users), ("--turn-pass", passes)] {
        if v.len() > 1 && v.len() != turn.len() {
            return Err(IceConfigError::CredentialCount {
                flag,
                given: v.len(),
                servers: turn.len(),
            });
        }
    }
    let pick = |v: &[String], i: usize| v.get(i).or(v.first()).cloned();
    for (i, url) in turn.iter().enumerate() {
        if !(url.starts_with("turn:") || url.starts_with("turns:")) {
            return Err(IceConfigError::NotTurn(url.clone()));
        }
        servers.push(IceServer::new(url, pick(users, i), pick(passes, i))?);
    }
    Ok(servers)
}

/// A STUN or TURN server (RFC 7064/7065 URL), with credentials for TURN.
#[derive(Clone)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// Checks `url` (`stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`, `turns:`...)
    /// and that a TURN server has credentials. The message says what to fix.
    pub fn new(
        url: &str,
        username: Option<String>,
        credential: Option<String>,
    ) -> Result<Self, IceConfigError> {
        rtc::ice::url::Url::parse_url(url).map_err(|e| IceConfigError::NotAUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let turn = url.starts_with("turn");
        if turn && (username.is_none() || credential.is_none()) {
            return Err(IceConfigError::NoCredentials(url.to_owned()));
        }
        // They go into quoted strings of the Link header (RFC 8288): keep them simple.
        for v in [&username, &credential].into_iter().flatten() {
            if v.chars()
                .any(|c| c == '"' || c == '\\' || !c.is_ascii_graphic())
            {
                return Err(IceConfigError::BadCredentials(url.to_owned()));
            }
        }
        Ok(Self {
            url: url.to_owned(),
            username: if turn { username } else { None },
            credential: if turn { credential } else { None },
        })
    }

    /// The server for our own ICE agent, if it can use it: the crate speaks STUN and TURN
    /// over UDP only (`stuns:`, `turns:` and TURN over TCP are for browsers).
    pub fn for_agent(&self) -> Option<RTCIceServer> {
        let usable = (self.url.starts_with("stun:") || self.url.starts_with("turn:"))
            && !self.url.contains("transport=tcp");
        usable.then(|| RTCIceServer {
            urls: vec![self.url.clone()],
            username: self.username.clone().unwrap_or_default(),
            credential: self.credential.clone().unwrap_or_default(),
        })
    }

    /// The `Link` header value announcing this server (WHIP, RFC 9725 section 4.6, which
    /// WHEP follows).
    pub fn link(&self) -> String {
        match (&self.username, &self.credential) {
            (Some(u), Some(c)) => format!(
                "<{}>; rel=\"ice-server\"; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\"",
                self.url
            ),
            _ => format!("<{}>; rel=\"ice-server\"", self.url),
        }
    }
}

impl fmt::Debug for IceServer {
    // Credentials never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IceServer({})", self.url)
    }
}

/// The candidates of our answer as viewers should see them:
///
/// * only component 1 (RTP): WebRTC multiplexes RTCP on the same port, and the crate's
///   duplicate component-2 lines only cost bytes and confuse some clients (whip-whep joins
///   restart candidates in a way that breaks with more than one);
/// * for every host candidate, a copy advertising each of `public_ips` (of the same IP
///   family) with the same port: what a 1:1 NAT forwards to this host. The crate's own
///   setting for this is never applied; its agent matches inbound checks by local socket, so
///   a check arriving through the NAT is answered on the right one.
pub fn advertise_candidates(sdp: &str, public_ips: &[IpAddr]) -> String {
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut added: Vec<(IpAddr, String)> = Vec::new();
    for line in sdp.split_inclusive('\n') {
        let Some(cand) = line.trim_end().strip_prefix("a=candidate:") else {
            out.push_str(line);
            continue;
        };
        // foundation component transport priority address port typ host ...
        let f: Vec<&str> = cand.split_ascii_whitespace().collect();
        if f.get(1).is_some_and(|c| *c != "1") {
            continue;
        }
        out.push_str(line);
        if f.len() < 8 || f[6] != "typ" || f[7] != "host" {
            continue;
        }
        let Ok(local) = f[4].parse::<IpAddr>() else {
            continue;
        };
        for ip in public_ips {
            let key = (*ip, format!("{} {}", f[1], f[5]));
            if ip.is_ipv4() != local.is_ipv4() || *ip == local || added.contains(&key) {
                continue;
            }
            if !out.ends_with('\n') {
                // The last line, unterminated: a copy must not run on from it.
                out.push_str("\r\n");
            }
            // Own foundation (a different address), one below the original's priority.
            let priority = f[3].parse::<u32>().unwrap_or(1).saturating_sub(1);
            out.push_str(&format!(
                "a=candidate:{}9 {} {} {priority} {ip} {} typ host",
                f[0], f[1], f[2], f[5]
            ));
            for extra in &f[8..] {
                out.push(' ');
                out.push_str(extra);
            }
            out.push_str("\r\n");
            added.push(key);
        }
    }
    out
}

/// A fixed range of UDP ports, handed out one per session (every socket of a session binds
/// the same port on its own address), so one firewall rule covers every viewer.
pub struct PortPool {
    range: RangeInclusive<u16>,
    // FIFO: a port just released goes to the back, so it is not rebound at once.
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(range.clone().collect()),
            range,
        })
    }

    /// Parses `MIN-MAX` (e.g. `50000-50100`).
    pub fn parse(s: &str) -> Result<Arc<Self>, IceConfigError> {
        let bad = || IceConfigError::PortRange(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok(Self::new(a..=b))
    }

    /// Ports in the range.
    pub fn len(&self) -> usize {
        self.range.clone().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ports not leased now.
    pub fn available(&self) -> usize {
        lock(&self.free).len()
    }

    /// Takes a free port, or `None` when every port is in use.
    pub fn lease(self: &Arc<Self>) -> Option<PortLease> {
        let port = lock(&self.free).pop_front()?;
        Some(PortLease {
            pool: self.clone(),
            port,
        })
    }
}

impl fmt::Debug for PortPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortPool({self}, {} free)", self.available())
    }
}

impl fmt::Display for PortPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range.start(), self.range.end())
    }
}

/// A port taken from a [`PortPool`]; it goes back when this is dropped.
pub struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.pool.free).push_back(self.port);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ip_is_advertised_next_to_each_host_candidate() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   a=candidate:1 1 udp 2130706431 10.0.0.5 50001 typ host\r\n\
                   a=candidate:2 1 udp 1694498815 198.51.100.9 40000 typ srflx raddr 10.0.0.5 rport 50001\r\n\
                   a=end-of-candidates\r\n";
        let ip: IpAddr = "203.0.113.7".parse().expect("ip");
        let out = advertise_candidates(sdp, &[ip]);
        assert!(out.contains("a=candidate:1 1 udp 2130706431 10.0.0.5 50001 typ host\r\n"));
        assert!(out.contains("a=candidate:19 1 udp 2130706430 203.0.113.7 50001 typ host\r\n"));
        assert_eq!(out.matches("203.0.113.7").count(), 1, "srflx is not copied");
        let rtcp = "a=candidate:1 2 udp 2130706431 10.0.0.5 50001 typ host\r\n";
        assert_eq!(
            advertise_candidates(rtcp, &[]),
            "",
            "RTCP is multiplexed: no component 2"
        );
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(advertise_candidates(sdp, &[v6]), sdp, "families must match");
    }

    #[test]
    fn a_last_candidate_without_line_end_is_not_run_into() {
        let sdp = "a=candidate:1 1 udp 2130706431 10.0.0.5 50001 typ host";
        let ip: IpAddr = "203.0.113.7".parse().expect("ip");
        assert_eq!(
            advertise_candidates(sdp, &[ip]),
            format!("{sdp}\r\na=candidate:19 1 udp 2130706430 203.0.113.7 50001 typ host\r\n")
        );
    }

    #[test]
    fn port_pool_leases_each_port_once_and_takes_them_back() {
        let pool = PortPool::parse("40000-40001").expect("range");
        let a = pool.lease().expect("first");
        let b = pool.lease().expect("second");
        assert_ne!(a.port(), b.port());
        assert!(pool.lease().is_none(), "exhausted");
        drop(a);
        assert_eq!(pool.available(), 1);
        assert!(pool.lease().is_some());
        for bad in ["40000", "5-1", "0-10", "a-b", "1-70000"] {
            assert!(PortPool::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ice_servers_are_checked_and_credentials_stay_out_of_debug() {
        let t = IceServer::new(
            "turn:127.0.0.1:3478",
            Some("u".into()),
            Some("secret".into()),
        )
        .expect("valid");
        assert_eq!(
            t.link(),
            "<turn:127.0.0.1:3478>; rel=\"ice-server\"; username=\"u\"; credential=\"secret\"; credential-type=\"password\""
        );
        assert!(!format!("{t:?}").contains("secret"));
        assert!(IceServer::new("turn:127.0.0.1:3478", None, None).is_err());
        assert!(IceServer::new("http://x", None, None).is_err());
        let s = IceServer::new("stun:127.0.0.1:3478", None, None).expect("stun");
        assert_eq!(s.link(), "<stun:127.0.0.1:3478>; rel=\"ice-server\"");
        assert!(s.for_agent().is_some());
        let tcp = IceServer::new(
            "turn:h:3478?transport=tcp",
            Some("u".into()),
            Some("p".into()),
        )
        .expect("valid");
        assert!(tcp.for_agent().is_none(), "the crate has no TURN over TCP");
    }
}
