//! Which parts of an X11 screen changed since we last looked, from the X server's DAMAGE
//! extension (the way VNC servers and browsers' own screen capturers avoid re-reading a
//! screen that did not change).
//!
//! A damage object on the root window collects every drawing operation's area; each look
//! takes the collected region and empties it in one request (`DamageSubtract`), then reads its
//! rectangles (`XFIXES FetchRegion`). Capture then converts only those rectangles, and a
//! screen where nothing changed costs neither a grab nor a conversion nor an encode.

use super::Rect;
use x11rb::connection::Connection;
use x11rb::protocol::damage::{ConnectionExt as _, ReportLevel};
use x11rb::protocol::xfixes::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

/// More rectangles than this are merged into their bounding box: one conversion of a larger
/// area beats hundreds of tiny ones (a region after heavy drawing can be very fragmented).
const MAX_RECTS: usize = 32;

/// Changes to one monitor's part of a root window.
pub struct Damage {
    conn: RustConnection,
    root: u32,
    damage: u32,
    region: u32,
    /// The monitor's rectangle in root coordinates: damage is reported relative to it.
    monitor: (i32, i32, u32, u32),
}

impl Damage {
    /// Starts collecting changes to `root` (of the display in `DISPLAY`) within the monitor
    /// at (`x`, `y`) of `width` x `height`. Fails when the server lacks DAMAGE or XFIXES.
    pub fn watch(root: u32, x: i16, y: i16, width: u16, height: u16) -> Result<Self, String> {
        let (conn, _) = x11rb::connect(None).map_err(|e| e.to_string())?;
        // Both extensions must be told which version we speak before any other request.
        let no = |ext: &str, e: &dyn std::fmt::Display| format!("no {ext} extension ({e})");
        conn.damage_query_version(1, 1)
            .map_err(|e| no("DAMAGE", &e))?
            .reply()
            .map_err(|e| no("DAMAGE", &e))?;
        conn.xfixes_query_version(2, 0)
            .map_err(|e| no("XFIXES", &e))?
            .reply()
            .map_err(|e| no("XFIXES", &e))?;
        let damage = conn.generate_id().map_err(|e| e.to_string())?;
        let region = conn.generate_id().map_err(|e| e.to_string())?;
        // NonEmpty: one event when the region becomes non-empty, not one per drawing.
        conn.damage_create(damage, root, ReportLevel::NON_EMPTY)
            .map_err(|e| e.to_string())?;
        conn.xfixes_create_region(region, &[])
            .map_err(|e| e.to_string())?;
        conn.flush().map_err(|e| e.to_string())?;
        Ok(Self {
            conn,
            root,
            damage,
            region,
            monitor: (x.into(), y.into(), width.into(), height.into()),
        })
    }

    /// The connection the changes come over (grab them over it too: same ordering).
    pub fn connection(&self) -> &RustConnection {
        &self.conn
    }

    /// The root window watched.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// The monitor's top left corner on the root window.
    pub fn origin(&self) -> (i16, i16) {
        (self.monitor.0 as i16, self.monitor.1 as i16)
    }

    /// Appends the rectangles (monitor coordinates, clipped to it) that changed since the
    /// last call to `out`, and starts collecting afresh.
    pub fn take(&mut self, out: &mut Vec<Rect>) -> Result<(), String> {
        let e = |e: &dyn std::fmt::Display| format!("X damage tracking failed: {e}");
        self.conn
            .damage_subtract(self.damage, x11rb::NONE, self.region)
            .map_err(|x| e(&x))?;
        let reply = self
            .conn
            .xfixes_fetch_region(self.region)
            .map_err(|x| e(&x))?
            .reply()
            .map_err(|x| e(&x))?;
        // Drop the DamageNotify events: the region is what we read.
        while self.conn.poll_for_event().map_err(|x| e(&x))?.is_some() {}
        let (mx, my, mw, mh) = self.monitor;
        let start = out.len();
        for r in &reply.rectangles {
            let x0 = (i32::from(r.x) - mx).clamp(0, mw as i32) as u32;
            let y0 = (i32::from(r.y) - my).clamp(0, mh as i32) as u32;
            let x1 = (i32::from(r.x) + i32::from(r.width) - mx).clamp(0, mw as i32) as u32;
            let y1 = (i32::from(r.y) + i32::from(r.height) - my).clamp(0, mh as i32) as u32;
            if x1 > x0 && y1 > y0 {
                out.push(Rect::new(x0, y0, x1 - x0, y1 - y0));
            }
        }
        if out.len() - start > MAX_RECTS {
            let all = out[start..].iter().copied().reduce(Rect::union);
            out.truncate(start);
            out.extend(all);
        }
        Ok(())
    }
}
