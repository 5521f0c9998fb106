//! The real transport: FltLib's FilterConnectCommunicationPort / FilterSendMessage /
//! FilterGetMessage (Windows only).

use std::ffi::c_void;

use ctxguard_protocol::{ConnectContext, MAX_REPLY_BYTES, PORT_NAME};
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FILTER_MESSAGE_HEADER, FilterConnectCommunicationPort, FilterGetMessage, FilterSendMessage,
};

use super::transport::{Transport, TransportError, classify_hresult as classify};

/// An open client port.
pub struct FltLibTransport {
    port: HANDLE,
}

// SAFETY: a port handle may be used from any thread; FltLib calls are thread-safe.
unsafe impl Send for FltLibTransport {}

/// An 8-aligned byte buffer (the driver refuses misaligned buffers).
fn aligned_buffer(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes.div_ceil(8)]
}

/// Connects to ctxguard's port with `context`.
///
/// # Errors
/// [`TransportError`] from the connect's HRESULT; a NULL or invalid handle with a success
/// HRESULT counts as not reachable.
pub fn connect(context: &ConnectContext) -> Result<Box<dyn Transport>, TransportError> {
    let name: Vec<u16> = PORT_NAME.encode_utf16().chain(Some(0)).collect();
    let context = context.encode();
    let mut port: HANDLE = std::ptr::null_mut();
    #[allow(clippy::cast_possible_truncation)] // 16 bytes.
    // SAFETY: `name` is NUL-terminated, `context` is 16 readable bytes, `port` a valid out pointer.
    let hresult = unsafe {
        FilterConnectCommunicationPort(
            name.as_ptr(),
            0,
            context.as_ptr().cast(),
            context.len() as u16,
            std::ptr::null(),
            &raw mut port,
        )
    };
    if hresult < 0 {
        return Err(classify(hresult));
    }
    if port.is_null() || port == INVALID_HANDLE_VALUE {
        return Err(TransportError::NotReachable("FilterConnectCommunicationPort succeeded but returned no handle".into()));
    }
    Ok(Box::new(FltLibTransport { port }))
}

impl Transport for FltLibTransport {
    fn send(&self, request: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut input = aligned_buffer(request.len());
        // SAFETY: `input` holds at least request.len() bytes; u64 → u8 view of owned memory.
        let input_bytes = unsafe { std::slice::from_raw_parts_mut(input.as_mut_ptr().cast::<u8>(), request.len()) };
        input_bytes.copy_from_slice(request);
        let mut output = aligned_buffer(MAX_REPLY_BYTES);
        let mut returned = 0u32;
        #[allow(clippy::cast_possible_truncation)] // requests ≤ 64 KiB, replies ≤ 256 KiB.
        // SAFETY: both buffers are owned, 8-aligned and at least as long as the lengths passed.
        let hresult = unsafe {
            FilterSendMessage(
                self.port,
                input.as_ptr().cast::<c_void>(),
                request.len() as u32,
                output.as_mut_ptr().cast(),
                (output.len() * 8) as u32,
                &raw mut returned,
            )
        };
        if hresult < 0 {
            return Err(classify(hresult));
        }
        let length = (returned as usize).min(output.len() * 8);
        // SAFETY: `output` owns output.len() * 8 initialized bytes.
        let bytes = unsafe { std::slice::from_raw_parts(output.as_ptr().cast::<u8>(), length) };
        Ok(bytes.to_vec())
    }

    fn get_message(&self) -> Result<Vec<u8>, TransportError> {
        let header = size_of::<FILTER_MESSAGE_HEADER>();
        let capacity = header + ctxguard_protocol::Event::encoded_len(ctxguard_protocol::MAX_EVENT_NAME_UNITS);
        let mut buffer = aligned_buffer(capacity);
        #[allow(clippy::cast_possible_truncation)] // a few KiB.
        // SAFETY: `buffer` is 8-aligned, owned and `capacity` bytes long; no OVERLAPPED: the call blocks.
        let hresult =
            unsafe { FilterGetMessage(self.port, buffer.as_mut_ptr().cast(), (buffer.len() * 8) as u32, std::ptr::null_mut()) };
        if hresult < 0 {
            return Err(classify(hresult));
        }
        // SAFETY: `buffer` owns buffer.len() * 8 initialized bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), buffer.len() * 8) };
        let body = &bytes[header..];
        // The event's own header says how long it is; Event::parse checks it.
        let length = body.get(8..12).map_or(0, |field| u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize);
        Ok(body[..length.min(body.len())].to_vec())
    }
}

impl Drop for FltLibTransport {
    fn drop(&mut self) {
        // SAFETY: `port` is the handle FilterConnectCommunicationPort returned, closed once.
        unsafe { CloseHandle(self.port) };
    }
}
