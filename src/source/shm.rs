//! Grabs rectangles of an X screen through MIT-SHM: the X server writes just those pixels
//! into memory we share with it, so a change of a few glyphs costs a few kilobytes, not the
//! whole screen (8 MB at 1080p) that a full-screen grab copies every time.

use super::Rect;
use x11rb::connection::Connection;
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xproto::ImageFormat;
use x11rb::rust_connection::RustConnection;

/// Grab requests sent before their replies are read.
const IN_FLIGHT: usize = 8;

/// A shared-memory segment attached to one X connection, big enough for one whole monitor.
pub struct ShmGrabber {
    seg: u32,
    addr: *const u8,
    len: usize,
}

impl ShmGrabber {
    /// Makes a private segment of `len` bytes and attaches it to `conn`'s server. The segment
    /// is marked for removal at once, so the kernel frees it when both sides let go, even if
    /// we crash. Fails when the server has no MIT-SHM or cannot attach (another user's server).
    pub fn new(conn: &RustConnection, len: usize) -> Result<Self, String> {
        let no_shm = |e: &dyn std::fmt::Display| format!("no MIT-SHM extension ({e})");
        conn.shm_query_version()
            .map_err(|e| no_shm(&e))?
            .reply()
            .map_err(|e| no_shm(&e))?;
        // SAFETY: plain System V calls; the returned id and address are checked before use.
        let (id, addr) = unsafe {
            let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
            if id == -1 {
                return Err(format!("shmget: {}", std::io::Error::last_os_error()));
            }
            let addr = libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY);
            if addr as isize == -1 {
                let e = std::io::Error::last_os_error();
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
                return Err(format!("shmat: {e}"));
            }
            (id, addr as *const u8)
        };
        let attached = conn
            .generate_id()
            .map_err(|e| e.to_string())
            .and_then(|seg| {
                conn.shm_attach(seg, id as u32, false)
                    .map_err(|e| e.to_string())?
                    .check()
                    .map_err(|e| format!("the X server cannot attach our memory: {e}"))?;
                Ok(seg)
            });
        // SAFETY: the segment stays mapped (and attached, if that worked) until dropped; RMID
        // only destroys it once the last attachment is gone.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        match attached {
            Ok(seg) => Ok(Self { seg, addr, len }),
            Err(e) => {
                // SAFETY: `addr` came from shmat above and nothing refers to it.
                unsafe { libc::shmdt(addr.cast()) };
                Err(e)
            }
        }
    }

    /// Grabs each of `rects` (relative to the monitor at `origin` of window `root`) into the
    /// segment, one after the other, and returns the segment with where each starts (rows of
    /// `width * 4` bytes, BGRX). Rectangles that do not all fit make it fail (grab whole).
    pub fn grab(
        &mut self,
        conn: &RustConnection,
        root: u32,
        origin: (i16, i16),
        rects: &[Rect],
        starts: &mut Vec<usize>,
    ) -> Result<&[u8], String> {
        starts.clear();
        let mut offset = 0usize;
        for batch in rects.chunks(IN_FLIGHT) {
            // A batch of requests goes out at once (one round trip for all), then every
            // reply is checked: each grab must have worked and be 4 bytes a pixel.
            let mut cookies: [Option<_>; IN_FLIGHT] = Default::default();
            for (r, cookie) in batch.iter().zip(&mut cookies) {
                let bytes = r.width as usize * r.height as usize * 4;
                if offset + bytes > self.len {
                    return Err("changed area larger than the screen".into());
                }
                *cookie = Some((
                    conn.shm_get_image(
                        root,
                        origin.0 + r.x as i16,
                        origin.1 + r.y as i16,
                        r.width as u16,
                        r.height as u16,
                        !0,
                        ImageFormat::Z_PIXMAP.into(),
                        self.seg,
                        offset as u32,
                    )
                    .map_err(|e| e.to_string())?,
                    bytes,
                ));
                starts.push(offset);
                offset += bytes;
            }
            for (cookie, bytes) in cookies.into_iter().flatten() {
                let reply = cookie
                    .reply()
                    .map_err(|e| format!("X shared-memory grab failed: {e}"))?;
                if reply.size as usize != bytes {
                    return Err(format!(
                        "the screen is {} bits deep; only 24 or 32 (4 bytes a pixel) are grabbed in part",
                        reply.depth
                    ));
                }
            }
        }
        // SAFETY: the mapping is `len` bytes long and lives as long as `self`; the server
        // wrote into it only while serving the requests whose replies we read above.
        Ok(unsafe { std::slice::from_raw_parts(self.addr, offset) })
    }
}

impl Drop for ShmGrabber {
    fn drop(&mut self) {
        // SAFETY: `addr` came from shmat and no slice of it outlives `self` (`grab` borrows).
        unsafe { libc::shmdt(self.addr.cast()) };
    }
}
