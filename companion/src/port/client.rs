//! Requests and replies over a [`Transport`]: version negotiation, paging, typed results.

use std::cell::Cell;

use ctxguard_protocol::{
    CONNECT_FLAG_EVENTS, ConnectContext, Event, EventKind, HANDLES_FIXED_BYTES, HEADER_BYTES, HandleQuery, MAX_PREFIX_UNITS,
    PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, Reply, Request, Utf16Le, command, encode_request,
};
use serde::Serialize;

use super::error::PortError;
use super::transport::{Connector, Transport, TransportError};

/// The driver's answer to Hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Hello {
    /// The version both speak.
    pub version: u16,
    /// The driver's oldest protocol version.
    pub driver_min_version: u16,
    /// The driver's newest protocol version.
    pub driver_max_version: u16,
    /// The port's MaxConnections.
    pub max_connections: u16,
    /// ctxguard.sys's own version.
    pub driver_version: [u16; 3],
}

/// One context type's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // The fields are the protocol's KindStats, documented there.
pub struct KindInfo {
    pub allocated: u64,
    pub attached: u64,
    pub collisions: u64,
    pub freed: u64,
    pub live: u64,
    pub high_water: u64,
}

/// GetStats, as the CLI prints it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)] // The fields are the protocol's StatsReply, documented there.
pub struct Stats {
    pub instance: KindInfo,
    pub stream: KindInfo,
    pub stream_handle: KindInfo,
    pub open_handles: u64,
    pub events_sent: u64,
    pub events_dropped: u64,
    pub events_queued: u64,
    pub connections: u64,
}

/// One live stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Normalized name (lossily decoded from UTF-16).
    pub name: String,
    /// Handles open on it now.
    pub open_handles: u32,
    /// The first opener's process id.
    pub first_opener_pid: u32,
    /// First open, 100 ns since 1601 UTC.
    pub first_open_time: i64,
}

/// One open handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HandleInfo {
    /// Normalized name of its stream.
    pub name: String,
    /// The process holding it.
    pub pid: u32,
    /// Its `ACCESS_MASK`.
    pub desired_access: u32,
    /// Its `FILE_SHARE_*` bits.
    pub share_access: u32,
    /// Open time, 100 ns since 1601 UTC.
    pub create_time: i64,
}

/// One event from the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventInfo {
    /// `open` or `close`.
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// The driver's sequence number (gaps are dropped events).
    pub sequence: u64,
    /// When, 100 ns since 1601 UTC.
    pub time: i64,
    /// The stream's name.
    pub name: String,
    /// The name was cut by the driver.
    pub truncated: bool,
}

/// At most this many pages per listing, so a misbehaving driver cannot loop the client forever.
const MAX_PAGES: usize = 1 << 20;

/// A connected, version-checked client.
pub struct Client {
    transport: Box<dyn Transport>,
    next_request_id: Cell<u32>,
    hello: Hello,
}

impl Client {
    /// Connects (with the events flag when `events`), says Hello and checks the versions.
    ///
    /// # Errors
    /// [`PortError`]: not loaded, access denied, version mismatch (with the driver's range
    /// when a probe connection can learn it), events already taken.
    pub fn connect(connector: &dyn Connector, events: bool) -> Result<Self, PortError> {
        let context = ConnectContext {
            min_version: PROTOCOL_MIN_VERSION,
            max_version: PROTOCOL_VERSION,
            flags: if events { CONNECT_FLAG_EVENTS } else { 0 },
        };
        let transport = match connector.connect(&context) {
            Ok(transport) => transport,
            Err(TransportError::Status(ctxguard_protocol::status::REVISION_MISMATCH)) => {
                return Err(PortError::VersionMismatch { driver: probe_driver_versions(connector) });
            }
            Err(error) => return Err(error.into()),
        };
        let mut client = Self { transport, next_request_id: Cell::new(1), hello: Hello::default_unknown() };
        let hello = client.say_hello()?;
        if hello.version == 0 {
            return Err(PortError::VersionMismatch { driver: Some((hello.driver_min_version, hello.driver_max_version)) });
        }
        client.hello = hello;
        Ok(client)
    }

    /// What the driver said to Hello.
    #[must_use]
    pub fn hello(&self) -> Hello {
        self.hello
    }

    fn say_hello(&self) -> Result<Hello, PortError> {
        let bytes = self.exchange(&Request::Hello { min_version: PROTOCOL_MIN_VERSION, max_version: PROTOCOL_VERSION })?;
        match Reply::parse(&bytes).map_err(PortError::BadReply)?.1 {
            Reply::Hello(hello) => Ok(Hello {
                version: hello.version,
                driver_min_version: hello.driver_min_version,
                driver_max_version: hello.driver_max_version,
                max_connections: hello.max_connections,
                driver_version: hello.driver_version,
            }),
            _ => Err(PortError::BadReply(ctxguard_protocol::ParseError::UnknownCommand(0))),
        }
    }

    /// Sends `request`, checks the reply's id and command, returns its bytes.
    fn exchange(&self, request: &Request<'_>) -> Result<Vec<u8>, PortError> {
        let id = self.next_request_id.get();
        self.next_request_id.set(id.wrapping_add(1));
        let mut out = vec![0; HEADER_BYTES + HANDLES_FIXED_BYTES + 2 * MAX_PREFIX_UNITS];
        let length = encode_request(request, id, &mut out)
            .map_err(|error| PortError::Other(format!("cannot encode the request: {error}")))?;
        out.truncate(length);
        let reply = self.transport.send(&out)?;
        let (header, _) = Reply::parse(&reply).map_err(PortError::BadReply)?;
        if header.request_id != id || header.command != request.command() | command::REPLY {
            return Err(PortError::Other(format!(
                "the driver answered request {id} (command {:#x}) with request {} (command {:#x})",
                request.command(),
                header.request_id,
                header.command
            )));
        }
        Ok(reply)
    }

    /// The driver's context accounting and event counters.
    ///
    /// # Errors
    /// [`PortError`].
    pub fn stats(&self) -> Result<Stats, PortError> {
        let bytes = self.exchange(&Request::GetStats)?;
        let Reply::Stats(stats) = Reply::parse(&bytes).map_err(PortError::BadReply)?.1 else {
            return Err(PortError::Other("GetStats was not answered with statistics".into()));
        };
        let kind = |kind: &ctxguard_protocol::KindStats| KindInfo {
            allocated: kind.allocated,
            attached: kind.attached,
            collisions: kind.collisions,
            freed: kind.freed,
            live: kind.live,
            high_water: kind.high_water,
        };
        Ok(Stats {
            instance: kind(&stats.instance),
            stream: kind(&stats.stream),
            stream_handle: kind(&stats.stream_handle),
            open_handles: stats.open_handles,
            events_sent: stats.events_sent,
            events_dropped: stats.events_dropped,
            events_queued: stats.events_queued,
            connections: stats.connections,
        })
    }

    /// Every live stream, page by page.
    ///
    /// # Errors
    /// [`PortError`].
    pub fn streams(&self) -> Result<Vec<StreamInfo>, PortError> {
        let mut streams = Vec::new();
        let mut cursor = 0;
        for _ in 0..MAX_PAGES {
            let bytes = self.exchange(&Request::ListStreams { cursor, max_entries: 0 })?;
            let Reply::Streams(page) = Reply::parse(&bytes).map_err(PortError::BadReply)?.1 else {
                return Err(PortError::Other("ListStreams was not answered with streams".into()));
            };
            streams.extend(page.entries().map(|entry| StreamInfo {
                name: entry.name.to_string(),
                open_handles: entry.open_handles,
                first_opener_pid: entry.first_opener_pid,
                first_open_time: entry.first_open_time,
            }));
            if !page.more() {
                return Ok(streams);
            }
            if page.count == 0 {
                return Err(PortError::Other("the driver returned an empty page with more to come".into()));
            }
            cursor = page.next_cursor;
        }
        Err(PortError::Other("the stream listing did not end".into()))
    }

    /// The handles `pid` (every process when `None`) holds open under `under` (a normalized
    /// path prefix; empty for all), page by page.
    ///
    /// # Errors
    /// [`PortError`]; `Other` for a prefix longer than the protocol allows.
    pub fn handles(&self, pid: Option<u32>, under: &str) -> Result<Vec<HandleInfo>, PortError> {
        let prefix: Vec<u8> = under.encode_utf16().flat_map(u16::to_le_bytes).collect();
        if prefix.len() / 2 > MAX_PREFIX_UNITS {
            return Err(PortError::Other(format!("the path prefix is longer than {MAX_PREFIX_UNITS} UTF-16 units")));
        }
        let prefix = Utf16Le::new(&prefix).unwrap_or(Utf16Le::empty());
        let mut handles = Vec::new();
        let mut cursor = 0;
        for _ in 0..MAX_PAGES {
            let query = HandleQuery { pid: pid.unwrap_or(0), any_pid: pid.is_none(), cursor, max_entries: 0, prefix };
            let bytes = self.exchange(&Request::QueryHandles(query))?;
            let Reply::Handles(page) = Reply::parse(&bytes).map_err(PortError::BadReply)?.1 else {
                return Err(PortError::Other("QueryHandles was not answered with handles".into()));
            };
            handles.extend(page.entries().map(|entry| HandleInfo {
                name: entry.name.to_string(),
                pid: entry.pid,
                desired_access: entry.desired_access,
                share_access: entry.share_access,
                create_time: entry.create_time,
            }));
            if !page.more() {
                return Ok(handles);
            }
            if page.count == 0 {
                return Err(PortError::Other("the driver returned an empty page with more to come".into()));
            }
            cursor = page.next_cursor;
        }
        Err(PortError::Other("the handle listing did not end".into()))
    }

    /// Waits for the next event (the connection must have been made with `events`).
    ///
    /// # Errors
    /// [`PortError`] when the port is disconnected or the event is malformed.
    pub fn next_event(&self) -> Result<EventInfo, PortError> {
        let bytes = self.transport.get_message()?;
        let event = Event::parse(&bytes).map_err(PortError::BadReply)?;
        Ok(EventInfo {
            kind: match event.kind {
                EventKind::Open => "open",
                EventKind::Close => "close",
            },
            pid: event.pid,
            sequence: event.sequence,
            time: event.time,
            name: event.name.to_string(),
            truncated: event.truncated,
        })
    }
}

impl Hello {
    const fn default_unknown() -> Self {
        Self { version: 0, driver_min_version: 0, driver_max_version: 0, max_connections: 0, driver_version: [0; 3] }
    }
}

/// After a refused connect: connect with the widest range, say Hello, and report the driver's.
fn probe_driver_versions(connector: &dyn Connector) -> Option<(u16, u16)> {
    let transport = connector.connect(&ConnectContext { min_version: 0, max_version: u16::MAX, flags: 0 }).ok()?;
    let client = Client { transport, next_request_id: Cell::new(1), hello: Hello::default_unknown() };
    let hello = client.say_hello().ok()?;
    Some((hello.driver_min_version, hello.driver_max_version))
}
