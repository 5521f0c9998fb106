//! The filter communication port: the companion's way in, and the driver's attack surface.
//!
//! * Security: the port's descriptor is FltBuildDefaultSecurityDescriptor(FLT_PORT_ALL_ACCESS),
//!   so only SYSTEM and administrators connect; the object is created with OBJ_KERNEL_HANDLE.
//! * At most [`MAX_CONNECTIONS`] clients; each holds one slot of [`clients`], a static,
//!   so FltCloseClientPort and FltSendMessage always get a stable `PFLT_PORT*`.
//! * Connect validates the client's connection context (magic, version range, flags); one
//!   client at a time may subscribe to events.
//! * Messages: the input is captured once into pool memory ([`user_buffer`]), parsed by
//!   ctxguard-protocol (allocation-free, every length checked), answered into a pool buffer
//!   and written out through [`user_buffer`]. Every refusal is a documented NTSTATUS
//!   (docs/port.md) and frees whatever it allocated.

use core::ffi::c_void;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicIsize, Ordering};

use alloc::vec::Vec;
use ctxguard_protocol::{
    CONNECT_CONTEXT_BYTES, CONNECT_FLAG_EVENTS, ConnectContext, HEADER_BYTES, HandleQuery, HelloReply, ListWriter,
    MAX_REPLY_BYTES, MAX_REQUEST_BYTES, PORT_NAME, PROTOCOL_MIN_VERSION, PROTOCOL_VERSION, Request, StatsReply,
    encode_hello_reply, encode_stats_reply, name_is_under, status,
};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort, FltCreateCommunicationPort,
    FltFreeSecurityDescriptor, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_SUCCESS, UNICODE_STRING};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;

use crate::clients::{self, MAX_CONNECTIONS, connections};
use crate::{accounting, events, kernel, payloads, user_buffer};

/// `FLT_PORT_ALL_ACCESS` (fltkernel.h): `FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL`.
const FLT_PORT_ALL_ACCESS: u32 = 0x001F_0001;

/// The port's name as UTF-16, built at compile time from the protocol's [`PORT_NAME`].
static PORT_NAME_UTF16: [u16; PORT_NAME.len()] = {
    let bytes = PORT_NAME.as_bytes();
    let mut units = [0u16; PORT_NAME.len()];
    let mut index = 0;
    while index < bytes.len() {
        units[index] = bytes[index] as u16;
        index += 1;
    }
    units
};

/// The server port (0 while closed).
static SERVER_PORT: AtomicIsize = AtomicIsize::new(0);

/// Creates the server port. Call in DriverEntry after FltRegisterFilter, before
/// FltStartFiltering; on failure, unregister and fail DriverEntry with the status.
pub fn open(filter: PFLT_FILTER) -> NTSTATUS {
    let mut descriptor: PSECURITY_DESCRIPTOR = core::ptr::null_mut();
    // SAFETY: `descriptor` is a valid out pointer; the call allocates the descriptor, freed below.
    let status = unsafe { FltBuildDefaultSecurityDescriptor(&raw mut descriptor, FLT_PORT_ALL_ACCESS) };
    if !kernel::nt_success(status) {
        kprint!("FltBuildDefaultSecurityDescriptor failed: {status:#010x}");
        return status;
    }
    #[allow(clippy::cast_possible_truncation)] // a 13-unit constant name.
    let name = UNICODE_STRING {
        Length: (PORT_NAME_UTF16.len() * 2) as u16,
        MaximumLength: (PORT_NAME_UTF16.len() * 2) as u16,
        Buffer: PORT_NAME_UTF16.as_ptr().cast_mut(),
    };
    #[allow(clippy::cast_possible_truncation)] // a 48-byte structure.
    let attributes = OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: &raw const name,
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: descriptor.cast(),
        SecurityQualityOfService: core::ptr::null(),
    };
    clients::set_filter(filter);
    events::start();
    let mut server_port: PFLT_PORT = 0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // MAX_CONNECTIONS is 4.
    // SAFETY: `filter` is registered; `attributes`, `name` and the descriptor live across the
    // call; the callbacks match Filter Manager's signatures and live as long as the image.
    let status = unsafe {
        FltCreateCommunicationPort(
            filter,
            &raw mut server_port,
            &raw const attributes,
            core::ptr::null(),
            Some(connect),
            Some(disconnect),
            Some(message),
            MAX_CONNECTIONS as i32,
        )
    };
    // SAFETY: the descriptor came from FltBuildDefaultSecurityDescriptor and the port (if
    // created) keeps its own copy.
    unsafe { FltFreeSecurityDescriptor(descriptor) };
    if !kernel::nt_success(status) {
        kprint!("FltCreateCommunicationPort failed: {status:#010x}");
        clients::set_filter(0);
        return status;
    }
    SERVER_PORT.store(server_port, Ordering::Release);
    STATUS_SUCCESS
}

/// Stops events and closes the server port (no new connections). Call in unload before
/// FltUnregisterFilter, which then disconnects the remaining clients.
pub fn close() {
    events::shutdown();
    let server_port = SERVER_PORT.swap(0, Ordering::AcqRel);
    if server_port != 0 {
        // SAFETY: `server_port` came from FltCreateCommunicationPort and the swap hands it to
        // exactly one caller.
        unsafe { FltCloseCommunicationPort(server_port) };
    }
}

/// Connect notify (PASSIVE_LEVEL): validate the context, take a slot.
unsafe extern "system" fn connect(
    client_port: PFLT_PORT,
    _server_cookie: *const c_void,
    context: *const c_void,
    context_size: u32,
    connection_cookie: *mut *mut c_void,
) -> NTSTATUS {
    let request = match connect_context(context, context_size) {
        Ok(request) => request,
        Err(status) => return status,
    };
    let slot = match clients::connect(client_port, request.flags & CONNECT_FLAG_EVENTS != 0) {
        Ok(slot) => slot,
        Err(true) => return status::DEVICE_BUSY,
        Err(false) => return status::INSUFFICIENT_RESOURCES,
    };
    // SAFETY: Filter Manager passes a valid out pointer for the connection cookie.
    unsafe { connection_cookie.write((slot + 1) as *mut c_void) };
    STATUS_SUCCESS
}

/// Captures and checks a connection context.
fn connect_context(context: *const c_void, size: u32) -> Result<ConnectContext, NTSTATUS> {
    let size = size as usize;
    if size < CONNECT_CONTEXT_BYTES || context.is_null() {
        return Err(status::BUFFER_TOO_SMALL);
    }
    if size > CONNECT_CONTEXT_BYTES {
        return Err(status::INVALID_BUFFER_SIZE);
    }
    let mut bytes = [0u8; CONNECT_CONTEXT_BYTES];
    user_buffer::capture_into(context, &mut bytes)?;
    let request = ConnectContext::parse(&bytes).map_err(status::of)?;
    request.negotiate().ok_or(status::REVISION_MISMATCH)?;
    Ok(request)
}

/// Disconnect notify (PASSIVE_LEVEL): stop events if this was the subscriber, close the port.
unsafe extern "system" fn disconnect(connection_cookie: *const c_void) {
    let Some(slot) = (connection_cookie as usize).checked_sub(1).filter(|slot| *slot < MAX_CONNECTIONS) else {
        return;
    };
    clients::disconnect(slot);
    // SAFETY: the slot holds this connection's client port; FltCloseClientPort closes it and
    // NULLs the slot, serialized with any FltSendMessage on it.
    unsafe { FltCloseClientPort(clients::filter(), clients::client_port_slot(slot)) };
}

/// Message notify (PASSIVE_LEVEL, the sender's thread). `input` and `output` are raw user
/// addresses: only [`user_buffer`] touches them.
unsafe extern "system" fn message(
    _connection_cookie: *const c_void,
    input: *const c_void,
    input_length: u32,
    output: *mut c_void,
    output_length: u32,
    returned_length: *mut u32,
) -> NTSTATUS {
    let result = answer(input, input_length as usize, output, output_length as usize);
    let (status, length) = match result {
        Ok(length) => (STATUS_SUCCESS, length),
        Err(status) => (status, 0),
    };
    if !returned_length.is_null() {
        // The reply is at most output_length bytes, itself a u32.
        let length = u32::try_from(length).unwrap_or(0);
        // SAFETY: Filter Manager passes a kernel pointer to receive the reply's length.
        unsafe { returned_length.write(length) };
    }
    status
}

/// Captures, parses, answers and writes out one request; returns the reply's length.
fn answer(input: *const c_void, input_length: usize, output: *mut c_void, output_length: usize) -> Result<usize, NTSTATUS> {
    if input_length > MAX_REQUEST_BYTES {
        return Err(status::INVALID_BUFFER_SIZE);
    }
    if input_length < HEADER_BYTES {
        return Err(status::BUFFER_TOO_SMALL);
    }
    let request_bytes = user_buffer::capture(input, input_length)?;
    user_buffer::check_output(output, output_length)?;
    let (header, request) = Request::parse(&request_bytes).map_err(status::of)?;
    let mut reply = Vec::new();
    let capacity = output_length.min(MAX_REPLY_BYTES);
    reply.try_reserve_exact(capacity).map_err(|_| status::INSUFFICIENT_RESOURCES)?;
    reply.resize(capacity, 0);
    let length = match request {
        Request::Hello { min_version, max_version } => {
            let hello = HelloReply {
                version: ctxguard_protocol::negotiate(min_version, max_version).unwrap_or(0),
                driver_min_version: PROTOCOL_MIN_VERSION,
                driver_max_version: PROTOCOL_VERSION,
                #[allow(clippy::cast_possible_truncation)]
                max_connections: MAX_CONNECTIONS as u16,
                driver_version: DRIVER_VERSION,
            };
            encode_hello_reply(&hello, header.request_id, &mut reply).map_err(|_| status::BUFFER_TOO_SMALL)?
        }
        Request::GetStats => encode_stats_reply(&stats(), header.request_id, &mut reply).map_err(|_| status::BUFFER_TOO_SMALL)?,
        Request::ListStreams { cursor, max_entries } => list_streams(&mut reply, header.request_id, cursor, max_entries)?,
        Request::QueryHandles(query) => query_handles(&mut reply, header.request_id, &query)?,
    };
    user_buffer::write(output, output_length, &reply[..length])?;
    Ok(length)
}

fn stats() -> StatsReply {
    let snapshot = accounting::snapshot();
    StatsReply {
        instance: snapshot.instance,
        stream: snapshot.stream,
        stream_handle: snapshot.stream_handle,
        open_handles: snapshot.open_handles,
        events_sent: events::sent(),
        events_dropped: events::dropped(),
        events_queued: events::queued(),
        connections: connections(),
    }
}

/// Fills a ListStreams page; a page that cannot hold even its first entry is refused.
fn list_streams(reply: &mut [u8], request_id: u32, cursor: u32, max_entries: u32) -> Result<usize, NTSTATUS> {
    let mut writer = ListWriter::streams(reply, request_id, max_entries).map_err(|_| status::BUFFER_TOO_SMALL)?;
    let mut more = false;
    payloads::visit_streams(cursor as usize, &mut |stream| {
        if writer.push_stream(stream.open_handles, stream.first_opener_pid, stream.first_open_time, stream.name).is_err() {
            more = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    finish(writer, cursor, more)
}

/// Fills a QueryHandles page with the matching handles after the first `cursor` matches.
fn query_handles(reply: &mut [u8], request_id: u32, query: &HandleQuery<'_>) -> Result<usize, NTSTATUS> {
    let mut writer = ListWriter::handles(reply, request_id, query.max_entries).map_err(|_| status::BUFFER_TOO_SMALL)?;
    let mut more = false;
    let mut to_skip = query.cursor;
    payloads::visit_handles(&mut |handle| {
        if !(query.any_pid || handle.pid == query.pid) || !name_is_under(handle.stream_name, query.prefix) {
            return ControlFlow::Continue(());
        }
        if to_skip > 0 {
            to_skip -= 1;
            return ControlFlow::Continue(());
        }
        if writer
            .push_handle(handle.pid, handle.desired_access, handle.share_access, handle.create_time, handle.stream_name)
            .is_err()
        {
            more = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    finish(writer, query.cursor, more)
}

fn finish(writer: ListWriter<'_>, cursor: u32, more: bool) -> Result<usize, NTSTATUS> {
    if more && writer.count() == 0 {
        return Err(status::BUFFER_TOO_SMALL);
    }
    let next_cursor = cursor.saturating_add(u32::from(writer.count()));
    Ok(writer.finish(next_cursor, more))
}

/// The driver's version (major, minor, patch) from Cargo.
const DRIVER_VERSION: [u16; 3] = [
    parse_u16(env!("CARGO_PKG_VERSION_MAJOR")),
    parse_u16(env!("CARGO_PKG_VERSION_MINOR")),
    parse_u16(env!("CARGO_PKG_VERSION_PATCH")),
];

const fn parse_u16(text: &str) -> u16 {
    let bytes = text.as_bytes();
    let mut value: u16 = 0;
    let mut index = 0;
    while index < bytes.len() {
        value = value.saturating_mul(10).saturating_add((bytes[index] - b'0') as u16);
        index += 1;
    }
    value
}
