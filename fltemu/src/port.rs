//! Communication ports: the kernel side (FltCreateCommunicationPort, FltCloseCommunicationPort,
//! FltCloseClientPort, FltSendMessage; fltmgr-semantics F1-F6) and a user side mirroring FltLib
//! (FilterConnectCommunicationPort, FilterSendMessage, FilterGetMessage, FilterReplyMessage; F7).
//!
//! HRESULTs: FltLib turns the NTSTATUS of the underlying I/O into an HRESULT (ReactOS's fltlib,
//! a second opinion, calls `NtStatusToHResult`, i.e. `HRESULT_FROM_WIN32(RtlNtStatusToDosError
//! (status))`). fltemu maps the statuses it produces through the RtlNtStatusToDosError table
//! (see [`hresult_from_nt`]) and falls back to `HRESULT_FROM_NT` (status | 0x1000_0000) for any
//! other status.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Win32::Foundation::UNICODE_STRING;

use crate::exec::{self, APC_LEVEL, PASSIVE_LEVEL};
use crate::io::as_callback;
use crate::state::{self, status, Inner};
use crate::user::{Access, UserBuffer};
use crate::verifier::Violation;
use crate::{EmuError, Operation};

/// `OBJ_KERNEL_HANDLE` (F2).
const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// `STATUS_CONNECTION_COUNT_LIMIT`.
#[allow(clippy::cast_possible_wrap)]
const STATUS_CONNECTION_COUNT_LIMIT: i32 = 0xC000_0246_u32 as i32;
/// `ERROR_FLT_NO_WAITER_FOR_REPLY` as returned by FilterReplyMessage.
#[allow(clippy::cast_possible_wrap)]
pub const HRESULT_NO_WAITER_FOR_REPLY: i32 = 0x801F_0020_u32 as i32;
/// `E_INVALIDARG`.
#[allow(clippy::cast_possible_wrap)]
pub const E_INVALIDARG: i32 = 0x8007_0057_u32 as i32;

const SERVER_BASE: isize = 0x0000_0F17_3000_0000;
const CLIENT_BASE: isize = 0x0000_0F17_4000_0000;

/// `HRESULT_FROM_WIN32(RtlNtStatusToDosError(status))` for the statuses fltemu produces;
/// `HRESULT_FROM_NT(status)` otherwise. Success codes map to S_OK (0).
#[must_use]
pub fn hresult_from_nt(nt: i32) -> i32 {
    if nt >= 0 && nt != status::BUFFER_OVERFLOW && nt != status::TIMEOUT {
        return 0;
    }
    let win32: Option<u32> = match nt {
        status::OBJECT_NAME_NOT_FOUND => Some(2),   // ERROR_FILE_NOT_FOUND
        status::ACCESS_DENIED => Some(5),           // ERROR_ACCESS_DENIED
        status::PORT_DISCONNECTED => Some(6),       // ERROR_INVALID_HANDLE
        status::UNSUCCESSFUL => Some(31),           // ERROR_GEN_FAILURE
        status::NOT_SUPPORTED => Some(50),          // ERROR_NOT_SUPPORTED
        status::INVALID_PARAMETER => Some(87),      // ERROR_INVALID_PARAMETER
        status::BUFFER_TOO_SMALL => Some(122),      // ERROR_INSUFFICIENT_BUFFER
        status::OBJECT_NAME_COLLISION => Some(183), // ERROR_ALREADY_EXISTS
        status::BUFFER_OVERFLOW => Some(234),       // ERROR_MORE_DATA
        status::TIMEOUT => Some(258),               // WAIT_TIMEOUT
        status::ACCESS_VIOLATION | status::DATATYPE_MISALIGNMENT => Some(998), // ERROR_NOACCESS
        status::CONNECTION_REFUSED => Some(1225),   // ERROR_CONNECTION_REFUSED
        STATUS_CONNECTION_COUNT_LIMIT => Some(1238), // ERROR_CONNECTION_COUNT_LIMIT
        status::INSUFFICIENT_RESOURCES => Some(1450), // ERROR_NO_SYSTEM_RESOURCES
        status::INVALID_BUFFER_SIZE => Some(1784),  // ERROR_INVALID_USER_BUFFER
        _ => None,
    };
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    match win32 {
        Some(code) => (0x8007_0000 | code) as i32,
        None => (nt as u32 | 0x1000_0000) as i32,
    }
}

/// A server port.
#[derive(Debug)]
struct Server {
    name: String,
    cookie: usize,
    connect: usize,
    disconnect: usize,
    message: usize,
    max_connections: usize,
    connections: usize,
}

/// A message queued by FltSendMessage for FilterGetMessage.
#[derive(Debug)]
struct Pending {
    id: u64,
    payload: Vec<u8>,
    reply_length: u32,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
    delivered: HashSet<u64>,
    /// Replies awaited by a sender: None until FilterReplyMessage.
    awaiting: HashMap<u64, Option<Vec<u8>>>,
}

/// One connection (the kernel's client port and the user's handle).
#[derive(Debug)]
pub struct Connection {
    handle: isize,
    server: isize,
    pid: u32,
    cookie: AtomicUsize,
    kernel_open: AtomicBool,
    user_open: AtomicBool,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Connection {
    fn open(&self) -> bool {
        self.kernel_open.load(Ordering::Acquire) && self.user_open.load(Ordering::Acquire)
    }

    fn wake(&self) {
        let _guard = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        self.changed.notify_all();
    }
}

/// Ports behind the state mutex.
#[derive(Debug, Default)]
pub struct Ports {
    servers: HashMap<isize, Server>,
    clients: HashMap<isize, Arc<Connection>>,
    next: isize,
    next_message: u64,
}

fn read<T: Copy>(pointer: *const T) -> T {
    // SAFETY: the driver passes valid in pointers (each DDI's contract), read with no lock held.
    unsafe { pointer.read_unaligned() }
}

fn put<T>(pointer: *mut T, value: T) {
    if !pointer.is_null() {
        // SAFETY: a driver out pointer, valid per the DDI's contract; written with no lock held.
        unsafe { pointer.write_unaligned(value) };
    }
}

/// FltCreateCommunicationPort (DDI fltcreatecommunicationport; F2): PASSIVE_LEVEL;
/// OBJ_KERNEL_HANDLE required; duplicate name → STATUS_OBJECT_NAME_COLLISION; MaxConnections > 0.
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_create_communication_port(
    filter: isize,
    port_out: *mut isize,
    attributes: *const OBJECT_ATTRIBUTES,
    cookie: usize,
    connect: usize,
    disconnect: usize,
    message: usize,
    max_connections: i32,
) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let (filter_ok, injected) = {
        inner.enter("FltCreateCommunicationPort", PASSIVE_LEVEL);
        (inner.filter_ok(filter), inner.injected("FltCreateCommunicationPort"))
    };
    if let Some(failure) = injected {
        return failure;
    }
    if !filter_ok || port_out.is_null() || attributes.is_null() || connect == 0 || disconnect == 0 {
        return status::INVALID_PARAMETER;
    }
    let oa: OBJECT_ATTRIBUTES = read(attributes);
    if oa.Attributes & OBJ_KERNEL_HANDLE == 0 {
        inner.violation(Violation::InvalidParameter { function: "FltCreateCommunicationPort", reason: "OBJ_KERNEL_HANDLE missing (F2)" });
        return status::INVALID_PARAMETER;
    }
    if oa.ObjectName.is_null() {
        return status::INVALID_PARAMETER;
    }
    let name: UNICODE_STRING = read(oa.ObjectName);
    if name.Buffer.is_null() || name.Length == 0 {
        return status::INVALID_PARAMETER;
    }
    // Copied bytewise: the driver's Buffer may sit at an odd address (x64 allows it).
    // SAFETY: a pointer the driver passed (the DDI's contract); driver_mem checks the NULL region.
    let name = String::from_utf16_lossy(&unsafe { crate::driver_mem::counted_units(name.Buffer, name.Length) });
    let Ok(max_connections) = usize::try_from(max_connections) else { return status::INVALID_PARAMETER };
    if max_connections == 0 {
        return status::INVALID_PARAMETER;
    }
    let mut state = inner.lock();
    if state.ports.servers.values().any(|s| s.name.eq_ignore_ascii_case(&name)) {
        return status::OBJECT_NAME_COLLISION;
    }
    state.ports.next += 1;
    let handle = SERVER_BASE + state.ports.next * 0x100;
    state.ports.servers.insert(handle, Server { name, cookie, connect, disconnect, message, max_connections, connections: 0 });
    drop(state);
    put(port_out, handle);
    status::SUCCESS
}

/// FltCloseCommunicationPort (DDI; F3): stops new connections only.
extern "win64" fn flt_close_communication_port(port: isize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltCloseCommunicationPort", PASSIVE_LEVEL);
    let known = inner.lock().ports.servers.remove(&port).is_some();
    if !known {
        inner.violation(Violation::InvalidParameter { function: "FltCloseCommunicationPort", reason: "not an open server port" });
    }
}

/// FltCloseClientPort (DDI; F3): closes the kernel side and NULLs the caller's variable.
extern "win64" fn flt_close_client_port(filter: isize, port: *mut isize) {
    let Some(inner) = state::current() else { return };
    inner.enter("FltCloseClientPort", PASSIVE_LEVEL);
    let filter_ok = inner.filter_ok(filter);
    if port.is_null() {
        return;
    }
    let handle = read(port);
    put(port, 0);
    if handle == 0 {
        return;
    }
    let connection = inner.lock().ports.clients.get(&handle).cloned();
    match connection {
        Some(connection) if filter_ok => {
            if !connection.kernel_open.swap(false, Ordering::AcqRel) {
                inner.violation(Violation::InvalidParameter { function: "FltCloseClientPort", reason: "client port already closed" });
            }
            connection.wake();
        }
        _ => inner.violation(Violation::InvalidParameter { function: "FltCloseClientPort", reason: "not a client port of this filter" }),
    }
}

/// The deadline of an FltSendMessage timeout (100 ns units; negative = relative, positive =
/// absolute system time, 0 = do not wait; NULL = forever) (F6).
fn deadline(timeout: *const i64) -> Option<Instant> {
    const EPOCH_DIFFERENCE_100NS: i64 = 116_444_736_000_000_000;
    if timeout.is_null() {
        return None;
    }
    let value = read(timeout);
    let now = Instant::now();
    if value <= 0 {
        return Some(now + Duration::from_nanos(value.unsigned_abs().saturating_mul(100)));
    }
    let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let now_100ns = i64::try_from(unix_now.as_nanos() / 100).unwrap_or(i64::MAX) + EPOCH_DIFFERENCE_100NS;
    let remaining = value.saturating_sub(now_100ns).max(0).unsigned_abs();
    Some(now + Duration::from_nanos(remaining.saturating_mul(100)))
}

/// FltSendMessage (DDI fltsendmessage; F6; ≤ APC_LEVEL): queues the message for
/// FilterGetMessage and waits for delivery (no reply buffer) or for the reply; STATUS_TIMEOUT (a
/// success code) when the timeout passes first, STATUS_PORT_DISCONNECTED when either side
/// closed, STATUS_BUFFER_OVERFLOW when the reply is larger than `*ReplyLength` (truncated copy).
#[allow(clippy::too_many_arguments)]
extern "win64" fn flt_send_message(filter: isize, client: *const isize, sender: *const u8, sender_length: u32, reply: *mut u8, reply_length: *mut u32, timeout: *const i64) -> i32 {
    let Some(inner) = state::current() else { return status::FLT_NOT_INITIALIZED };
    let (filter_ok, injected) = {
        inner.enter("FltSendMessage", APC_LEVEL);
        (inner.filter_ok(filter), inner.injected("FltSendMessage"))
    };
    // Before *ClientPort is read: a test may hold the sender here (Emulator::hold_at).
    crate::hold::reach("FltSendMessage");
    if let Some(failure) = injected {
        return failure;
    }
    if !filter_ok || client.is_null() {
        return status::INVALID_PARAMETER;
    }
    let handle = read(client);
    let wants_reply = !reply.is_null();
    if wants_reply && reply_length.is_null() {
        return status::INVALID_PARAMETER;
    }
    let capacity = if wants_reply { read(reply_length) } else { 0 };
    let Some(connection) = inner.lock().ports.clients.get(&handle).cloned() else { return status::PORT_DISCONNECTED };
    if !connection.open() {
        return status::PORT_DISCONNECTED;
    }
    // SAFETY: the sender buffer holds SenderBufferLength bytes (FltSendMessage's contract).
    let payload = if sender.is_null() { Vec::new() } else { unsafe { crate::driver_mem::bytes(sender, sender_length as usize) } };
    let id = {
        let mut state = inner.lock();
        state.ports.next_message += 1;
        state.ports.next_message
    };
    let until = deadline(timeout);
    let mut queue = connection.queue.lock().unwrap_or_else(PoisonError::into_inner);
    queue.pending.push_back(Pending { id, payload, reply_length: capacity });
    if wants_reply {
        queue.awaiting.insert(id, None);
    }
    connection.changed.notify_all();
    loop {
        let delivered = queue.delivered.contains(&id);
        if delivered && !wants_reply {
            queue.delivered.remove(&id);
            return status::SUCCESS;
        }
        if let Some(Some(_)) = queue.awaiting.get(&id) {
            let answer = queue.awaiting.remove(&id).flatten().unwrap_or_default();
            queue.delivered.remove(&id);
            drop(queue);
            let copied = answer.len().min(capacity as usize);
            // SAFETY: the reply buffer holds *ReplyLength bytes (FltSendMessage's contract).
            unsafe { core::ptr::copy_nonoverlapping(answer.as_ptr(), reply, copied) };
            put(reply_length, u32::try_from(copied).unwrap_or(u32::MAX));
            return if answer.len() > capacity as usize { status::BUFFER_OVERFLOW } else { status::SUCCESS };
        }
        if !connection.open() {
            queue.pending.retain(|m| m.id != id);
            queue.awaiting.remove(&id);
            return status::PORT_DISCONNECTED;
        }
        let wait = match until {
            None => Duration::from_millis(50),
            Some(at) => {
                let now = Instant::now();
                if now >= at {
                    queue.pending.retain(|m| m.id != id);
                    queue.awaiting.remove(&id);
                    queue.delivered.remove(&id);
                    return status::TIMEOUT;
                }
                (at - now).min(Duration::from_millis(50))
            }
        };
        queue = connection.changed.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner).0;
    }
}

/// At FltUnregisterFilter: closes every server port still open (a violation the caller reports,
/// B11/E8) and cuts the kernel side of every remaining connection, so user-side waits end with
/// STATUS_PORT_DISCONNECTED and no callback reaches the unloading driver. Returns how many
/// server ports were open.
pub fn close_all_server_ports(inner: &Inner) -> usize {
    let mut state = inner.lock();
    let count = state.ports.servers.len();
    state.ports.servers.clear();
    let connections: Vec<Arc<Connection>> = state.ports.clients.values().cloned().collect();
    drop(state);
    for connection in connections {
        connection.kernel_open.store(false, Ordering::Release);
        connection.wake();
    }
    count
}

/// Port exports by name.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "FltCreateCommunicationPort" => flt_create_communication_port as *const () as usize,
        "FltCloseCommunicationPort" => flt_close_communication_port as *const () as usize,
        "FltCloseClientPort" => flt_close_client_port as *const () as usize,
        "FltSendMessage" => flt_send_message as *const () as usize,
        _ => return None,
    })
}

/// A message received by [`UserPort::get_message`] (FILTER_MESSAGE_HEADER + payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// FILTER_MESSAGE_HEADER.ReplyLength: the reply buffer size the sender offered (0: no reply).
    pub reply_length: u32,
    /// FILTER_MESSAGE_HEADER.MessageId.
    pub message_id: u64,
    /// The payload the driver sent.
    pub payload: Vec<u8>,
}

/// Size of FILTER_MESSAGE_HEADER.
pub const FILTER_MESSAGE_HEADER_SIZE: usize = 16;

/// The user side of a connection (what FilterConnectCommunicationPort returns).
pub struct UserPort {
    pub(crate) inner: Arc<Inner>,
    pub(crate) connection: Arc<Connection>,
    probe: AtomicBool,
}

impl std::fmt::Debug for UserPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPort").field("handle", &self.connection.handle).finish_non_exhaustive()
    }
}

/// Connects like FilterConnectCommunicationPort (F3, F7): runs the driver's connect callback at
/// PASSIVE_LEVEL in process `pid` with a kernel copy of `context`.
pub(crate) fn connect(inner: &Arc<Inner>, name: &str, context: &[u8], pid: u32) -> Result<Result<UserPort, i32>, EmuError> {
    if context.len() > usize::from(u16::MAX) {
        return Ok(Err(E_INVALIDARG));
    }
    let mut state = inner.lock();
    let Some((&server_handle, server)) = state.ports.servers.iter_mut().find(|(_, s)| s.name.eq_ignore_ascii_case(name)) else {
        return Ok(Err(hresult_from_nt(status::OBJECT_NAME_NOT_FOUND)));
    };
    if server.connections >= server.max_connections {
        return Ok(Err(hresult_from_nt(STATUS_CONNECTION_COUNT_LIMIT)));
    }
    server.connections += 1;
    let (callback, cookie) = (server.connect, server.cookie);
    state.ports.next += 1;
    let handle = CLIENT_BASE + state.ports.next * 0x100;
    let connection = Arc::new(Connection {
        handle,
        server: server_handle,
        pid,
        cookie: AtomicUsize::new(0),
        kernel_open: AtomicBool::new(true),
        user_open: AtomicBool::new(true),
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    });
    state.ports.clients.insert(handle, Arc::clone(&connection));
    drop(state);
    let context = context.to_vec();
    let result = inner.workers.run(inner.config.call_timeout, move || {
        exec::enter(PASSIVE_LEVEL, pid, Operation::PortConnect);
        let mut connection_cookie: usize = 0;
        // SAFETY: the driver's PFLT_CONNECT_NOTIFY.
        let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(isize, usize, *const u8, u32, *mut usize) -> i32>(callback) };
        let size = u32::try_from(context.len()).unwrap_or(0);
        let pointer = if context.is_empty() { core::ptr::null() } else { context.as_ptr() };
        // SAFETY: arguments as the ConnectNotifyCallback DDI documents.
        let status = exec::driver_call(|| unsafe { callback(handle, cookie, pointer, size, &raw mut connection_cookie) });
        (status, connection_cookie)
    });
    let (status, connection_cookie) = match result {
        Ok(v) => v,
        Err(stop) => return Err(crate::stopped(inner, stop)),
    };
    if status < 0 {
        let mut state = inner.lock();
        state.ports.clients.remove(&handle);
        if let Some(server) = state.ports.servers.get_mut(&server_handle) {
            server.connections -= 1;
        }
        return Ok(Err(hresult_from_nt(status)));
    }
    connection.cookie.store(connection_cookie, Ordering::Release);
    Ok(Ok(UserPort { inner: Arc::clone(inner), connection, probe: AtomicBool::new(true) }))
}

impl UserPort {
    /// Turns Filter Manager's probe of user buffers off for the next sends, to emulate a user
    /// thread changing the buffer between the probe and the driver's access (F4).
    pub fn set_probe(&self, probe: bool) {
        self.probe.store(probe, Ordering::Relaxed);
    }

    /// FilterSendMessage (F4, F7): calls the message-notify callback at PASSIVE_LEVEL in the
    /// sender's process with the raw user addresses. Returns the bytes returned, or the HRESULT.
    ///
    /// # Errors
    /// [`EmuError::Stopped`] when the driver crashed or bug-checked.
    pub fn send_message(&self, input: Option<&UserBuffer>, output: Option<&UserBuffer>) -> Result<Result<u32, i32>, EmuError> {
        self.send_raw(input.map(|b| (b.address(), b.len())), output.map(|b| (b.address(), b.len())))
    }

    /// As [`send_message`](Self::send_message) with explicit (address, length) pairs, e.g. a
    /// length longer than the buffer.
    ///
    /// # Errors
    /// [`EmuError::Stopped`] when the driver crashed or bug-checked.
    pub fn send_raw(&self, input: Option<(usize, usize)>, output: Option<(usize, usize)>) -> Result<Result<u32, i32>, EmuError> {
        if !self.connection.open() {
            return Ok(Err(hresult_from_nt(status::PORT_DISCONNECTED)));
        }
        if self.probe.load(Ordering::Relaxed) {
            // ProbeForRead / ProbeForWrite semantics: the whole range must be accessible.
            let readable = |range: Option<(usize, usize)>| {
                range.is_none_or(|(a, l)| l == 0 || matches!(self.inner.user.access_of(a, l), Some(Access::ReadWrite | Access::ReadOnly)))
            };
            let writable = |range: Option<(usize, usize)>| range.is_none_or(|(a, l)| l == 0 || self.inner.user.access_of(a, l) == Some(Access::ReadWrite));
            if !readable(input) || !writable(output) {
                return Ok(Err(hresult_from_nt(status::ACCESS_VIOLATION)));
            }
        }
        let message = self.inner.lock().ports.servers.get(&self.connection.server).map_or(0, |s| s.message);
        if message == 0 {
            return Ok(Err(hresult_from_nt(status::NOT_SUPPORTED)));
        }
        let cookie = self.connection.cookie.load(Ordering::Acquire);
        let pid = self.connection.pid;
        let (in_address, in_length) = input.unwrap_or((0, 0));
        let (out_address, out_length) = output.unwrap_or((0, 0));
        let result = self.inner.workers.run(self.inner.config.call_timeout, move || {
            exec::enter(PASSIVE_LEVEL, pid, Operation::PortMessage);
            let mut returned: u32 = 0;
            // SAFETY: the driver's PFLT_MESSAGE_NOTIFY.
            let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, u32, usize, u32, *mut u32) -> i32>(message) };
            let status = as_callback(Operation::PortMessage, PASSIVE_LEVEL, || {
                // SAFETY: arguments as the MessageNotifyCallback DDI documents (raw user addresses).
                unsafe {
                    callback(cookie, in_address, u32::try_from(in_length).unwrap_or(u32::MAX), out_address, u32::try_from(out_length).unwrap_or(u32::MAX), &raw mut returned)
                }
            });
            (status, returned)
        });
        match result {
            Ok((status, returned)) if status >= 0 && status != status::BUFFER_OVERFLOW => Ok(Ok(returned)),
            Ok((status, _)) => Ok(Err(hresult_from_nt(status))),
            Err(stop) => Err(crate::stopped(&self.inner, stop)),
        }
    }

    /// FilterGetMessage (F7): waits up to `timeout` (None = forever) for a message from
    /// FltSendMessage. A buffer smaller than header + payload fails with
    /// HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER) and leaves the message queued; a timeout is
    /// HRESULT_FROM_WIN32(WAIT_TIMEOUT) (what waiting on the OVERLAPPED gives); a closed port
    /// HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE).
    ///
    /// # Errors
    /// The HRESULT.
    pub fn get_message(&self, buffer_size: usize, timeout: Option<Duration>) -> Result<Message, i32> {
        let until = timeout.map(|t| Instant::now() + t);
        let connection = &self.connection;
        let mut queue = connection.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if !connection.open() {
                return Err(hresult_from_nt(status::PORT_DISCONNECTED));
            }
            if let Some(front) = queue.pending.front() {
                if front.payload.len() + FILTER_MESSAGE_HEADER_SIZE > buffer_size {
                    return Err(hresult_from_nt(status::BUFFER_TOO_SMALL));
                }
                let message = queue.pending.pop_front().expect("front exists");
                queue.delivered.insert(message.id);
                connection.changed.notify_all();
                return Ok(Message { reply_length: message.reply_length, message_id: message.id, payload: message.payload });
            }
            let wait = match until {
                None => Duration::from_millis(50),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return Err(hresult_from_nt(status::TIMEOUT));
                    }
                    (at - now).min(Duration::from_millis(50))
                }
            };
            queue = connection.changed.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// FilterReplyMessage (F6, F7): hands `payload` (without FILTER_REPLY_HEADER, as the driver
    /// receives it in practice) to the FltSendMessage waiting on `message_id`;
    /// ERROR_FLT_NO_WAITER_FOR_REPLY when none waits (timed out, or no reply was asked for).
    ///
    /// # Errors
    /// The HRESULT.
    pub fn reply_message(&self, message_id: u64, payload: &[u8]) -> Result<(), i32> {
        let mut queue = self.connection.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let delivered = queue.delivered.contains(&message_id);
        match queue.awaiting.get_mut(&message_id) {
            Some(slot @ None) if delivered => {
                *slot = Some(payload.to_vec());
                self.connection.changed.notify_all();
                Ok(())
            }
            _ => Err(HRESULT_NO_WAITER_FOR_REPLY),
        }
    }

    /// CloseHandle on the port: the driver's disconnect callback runs at PASSIVE_LEVEL (F3); it
    /// must call FltCloseClientPort, which fltemu checks.
    ///
    /// # Errors
    /// [`EmuError::Stopped`] when the driver crashed or bug-checked.
    pub fn close(self) -> Result<(), EmuError> {
        self.disconnect()
    }

    fn disconnect(&self) -> Result<(), EmuError> {
        if !self.connection.user_open.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.connection.wake();
        let (callback, server) = {
            let state = self.inner.lock();
            (state.ports.servers.get(&self.connection.server).map(|s| s.disconnect), self.connection.server)
        };
        // No callback once the filter is gone (unregistered: its image may be unloaded).
        let filter_alive = self.inner.filter_registered();
        let kernel_open = self.connection.kernel_open.load(Ordering::Acquire);
        if let (Some(callback), true, true) = (callback, kernel_open, filter_alive) {
            let cookie = self.connection.cookie.load(Ordering::Acquire);
            let pid = self.connection.pid;
            let result = self.inner.workers.run(self.inner.config.call_timeout, move || {
                exec::enter(PASSIVE_LEVEL, pid, Operation::PortDisconnect);
                // SAFETY: the driver's PFLT_DISCONNECT_NOTIFY.
                let callback = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize)>(callback) };
                // SAFETY: called with the connection cookie, as the DDI documents.
                exec::driver_call(|| unsafe { callback(cookie) });
            });
            if let Err(stop) = result {
                return Err(crate::stopped(&self.inner, stop));
            }
            if self.connection.kernel_open.load(Ordering::Acquire) {
                self.inner.violation(Violation::InvalidParameter { function: "DisconnectNotifyCallback", reason: "returned without FltCloseClientPort (F3)" });
            }
        }
        let mut state = self.inner.lock();
        state.ports.clients.remove(&self.connection.handle);
        if let Some(server) = state.ports.servers.get_mut(&server) {
            server.connections = server.connections.saturating_sub(1);
        }
        Ok(())
    }
}

impl Drop for UserPort {
    fn drop(&mut self) {
        let _ = self.disconnect();
    }
}
