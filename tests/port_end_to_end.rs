//! End to end: the companion's port client ↔ fltemu's port emulation ↔ the real ctxguard.sys.
//!
//! Statistics, streams and handles are compared with fltemu's own ground truth after scripted
//! I/O; events, MaxConnections, version negotiation and unload with a client connected or
//! events queued are exercised through the same client code the `ctxguard` CLI runs.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
// Counts in these tests are small; the casts compare them with fltemu's usize counts.
#![allow(clippy::cast_possible_truncation, clippy::too_many_lines)]

mod port_support;
mod support;

use std::sync::Arc;

use ctxguard_companion::port::cli::{PortCommand, execute};
use ctxguard_companion::port::{Client, Connector, PortError, Transport, TransportError};
use ctxguard_protocol::{CONNECT_FLAG_EVENTS, ConnectContext, PROTOCOL_VERSION, status};
use fltemu::{ContextType, FileHandle, OpenOptions, hresult_from_nt};
use port_support::{COMPANION_PID, VOLUME, assert_clean, connect_raw, connector, load, unload_clean};

fn options(pid: u32, desired_access: u32, share_access: u16) -> OpenOptions {
    OpenOptions { pid, desired_access, share_access, ..OpenOptions::default() }
}

fn full_name(path: &str) -> String {
    format!("{VOLUME}{path}")
}

#[test]
fn stats_streams_and_handles_match_fltemu_ground_truth() {
    let harness = load();
    let emulator = &harness.emulator;
    let volume = harness.volume;
    // Scripted I/O: two processes, three files, one stream with two handles, one closed file.
    let a1 = emulator.open(volume, "\\Docs\\a.txt", &options(100, 0x0012_0089, 3)).unwrap();
    let a2 = emulator.open(volume, "\\docs\\A.TXT", &options(200, 0x0012_019F, 1)).unwrap();
    let b = emulator.open(volume, "\\Docs\\sub\\b.txt", &options(100, 0x0012_0089, 7)).unwrap();
    let c = emulator.open(volume, "\\Other\\c.txt", &options(100, 0x0012_0089, 3)).unwrap();
    emulator.open_close(volume, "\\gone.txt", &options(300, 0x0012_0089, 3)).unwrap();
    emulator.cleanup(&c).unwrap();
    emulator.close(c).unwrap();

    let client = Client::connect(&connector(emulator), false).unwrap();
    let hello = client.hello();
    assert_eq!((hello.version, hello.driver_min_version, hello.driver_max_version), (PROTOCOL_VERSION, 1, PROTOCOL_VERSION));
    assert_eq!(hello.max_connections, 4);

    let stats = client.stats().unwrap();
    // fltemu's ground truth: contexts alive now, per type.
    assert_eq!(stats.instance.live, emulator.live_context_count(ContextType::Instance) as u64);
    assert_eq!(stats.stream.live, emulator.live_context_count(ContextType::Stream) as u64);
    assert_eq!(stats.stream_handle.live, emulator.live_context_count(ContextType::StreamHandle) as u64);
    assert_eq!(stats.instance.live, 1, "{stats:?}");
    assert_eq!(stats.open_handles, 3, "{stats:?}");
    assert_eq!(stats.stream_handle.live, 3, "{stats:?}");
    // Five creates succeeded, so five stream-handle contexts were allocated and attached.
    assert_eq!(stats.stream_handle.allocated, 5, "{stats:?}");
    assert_eq!(stats.stream_handle.freed, stats.stream_handle.allocated - stats.stream_handle.live);
    assert!(stats.stream_handle.high_water >= 3);
    assert_eq!(stats.connections, 1);
    // Every FltAllocateContext fltemu saw is counted under one type, and every context fltemu
    // no longer holds was counted as freed.
    let allocated = stats.instance.allocated + stats.stream.allocated + stats.stream_handle.allocated;
    assert_eq!(allocated, emulator.calls().total("FltAllocateContext"), "{stats:?}");
    let live = stats.instance.live + stats.stream.live + stats.stream_handle.live;
    assert_eq!(live, emulator.live_contexts().len() as u64, "{stats:?}");
    assert_eq!(stats.instance.freed + stats.stream.freed + stats.stream_handle.freed, allocated - live);

    // Streams: names, handle counts and first openers, as fltemu counts open file objects.
    let mut streams = client.streams().unwrap();
    streams.sort_by_key(|stream| stream.name.to_lowercase());
    let open: Vec<(String, u32)> =
        streams.iter().filter(|s| s.open_handles > 0).map(|s| (s.name.to_lowercase(), s.open_handles)).collect();
    assert_eq!(open, vec![(full_name("\\docs\\a.txt").to_lowercase(), 2), (full_name("\\docs\\sub\\b.txt").to_lowercase(), 1)]);
    let a = streams.iter().find(|s| s.name.eq_ignore_ascii_case(&full_name("\\Docs\\a.txt"))).unwrap();
    assert_eq!(a.first_opener_pid, 100);
    assert_eq!(emulator.open_file_objects(volume, "\\Docs\\a.txt"), 2);
    assert!(a.first_open_time > 116_444_736_000_000_000, "a FILETIME after 1970");

    // Handles of process 100, all and under a prefix (case-insensitive, component boundary).
    let all = client.handles(Some(100), "").unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let under = client.handles(Some(100), &full_name("\\DOCS\\SUB")).unwrap();
    assert_eq!(under.len(), 1, "{under:?}");
    assert!(under[0].name.eq_ignore_ascii_case(&full_name("\\Docs\\sub\\b.txt")));
    assert_eq!((under[0].pid, under[0].desired_access, under[0].share_access), (100, 0x0012_0089, 7));
    assert!(client.handles(Some(100), &full_name("\\Doc")).unwrap().is_empty(), "a prefix must end at a component boundary");
    let of_200 = client.handles(Some(200), &full_name("\\docs")).unwrap();
    assert_eq!(of_200.len(), 1);
    assert_eq!((of_200[0].desired_access, of_200[0].share_access), (0x0012_019F, 1));
    assert!(client.handles(Some(999), "").unwrap().is_empty());

    // The CLI's JSON is the same numbers.
    let mut out = Vec::new();
    execute(&PortCommand::Stats { json: true }, &connector(emulator), &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["stream_handle"]["live"], 3);
    assert_eq!(json["open_handles"], 3);
    let mut out = Vec::new();
    execute(&PortCommand::Handles { pid: 100, under: Some(full_name("\\docs")), json: false }, &connector(emulator), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("a.txt") && text.contains("b.txt") && text.contains("2 handle(s) held by process 100"), "{text}");
    let mut out = Vec::new();
    execute(&PortCommand::Status, &connector(emulator), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("driver:    loaded") && text.contains("reachable, protocol 1 in use, at most 4 connections"), "{text}");

    for file in [a1, a2, b] {
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
    }
    let after = client.stats().unwrap();
    assert_eq!(after.open_handles, 0);
    assert_eq!(after.stream_handle.live, emulator.live_context_count(ContextType::StreamHandle) as u64);
    assert!(client.handles(None, "").unwrap().is_empty());
    drop(client);
    assert_clean(emulator);
    unload_clean(emulator);
}

#[test]
fn paging_returns_every_stream_once() {
    let harness = load();
    let emulator = &harness.emulator;
    // Enough long names that one 64 KiB reply cannot hold them all.
    let long = "x".repeat(400);
    let files: Vec<FileHandle> = (0..120)
        .map(|index| emulator.open(harness.volume, &format!("\\many\\{index:03}-{long}"), &OpenOptions::default()).unwrap())
        .collect();
    let client = Client::connect(&connector(emulator), false).unwrap();
    let streams = client.streams().unwrap();
    let mut names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).filter(|n| n.contains("\\many\\")).collect();
    assert_eq!(names.len(), 120);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 120, "no stream twice");
    assert_eq!(client.handles(Some(1000), &full_name("\\many")).unwrap().len(), 120);
    for file in files {
        emulator.cleanup(&file).unwrap();
        emulator.close(file).unwrap();
    }
    drop(client);
    unload_clean(emulator);
}

#[test]
fn events_reach_the_subscriber_and_drops_are_counted() {
    let harness = load();
    let emulator = &harness.emulator;
    let watcher = Client::connect(&connector(emulator), true).unwrap();
    // A second subscriber is refused; a plain client is not.
    assert_eq!(Client::connect(&connector(emulator), true).err(), Some(PortError::EventsBusy));
    let reader = Client::connect(&connector(emulator), false).unwrap();

    let file = emulator.open(harness.volume, "\\watched.txt", &options(777, 0x0012_0089, 3)).unwrap();
    emulator.cleanup(&file).unwrap();
    emulator.close(file).unwrap();
    let open = watcher.next_event().unwrap();
    let close = watcher.next_event().unwrap();
    assert_eq!((open.kind, open.pid, open.name.as_str()), ("open", 777, full_name("\\watched.txt").as_str()));
    assert_eq!((close.kind, close.pid), ("close", 777));
    assert_eq!(close.sequence, open.sequence + 1);
    // FltSendMessage returns to the sender after the delivery: its count may trail a moment.
    let stats = settled(&reader, |stats| stats.events_sent == 2);
    assert_eq!((stats.events_sent, stats.events_dropped), (2, 0), "{stats:?}");

    // Nobody reads: the sender times out (100 ms each) and the 256-event ring overflows; every
    // lost event is counted, none silently.
    for index in 0..300 {
        emulator.open_close(harness.volume, &format!("\\burst{index}.txt"), &OpenOptions::default()).unwrap();
    }
    let stats = reader.stats().unwrap();
    assert!(stats.events_dropped > 0, "{stats:?}");
    // 2 + 600 events were published; at most one may be between the ring and FltSendMessage.
    let accounted = stats.events_sent + stats.events_dropped + stats.events_queued;
    assert!(accounted == 602 || accounted == 601, "{stats:?}");
    drop(watcher);
    drop(reader);
    unload_clean(emulator);
}

/// Polls GetStats (for up to 5 s) until `done` holds; returns the last answer.
fn settled(client: &Client, done: impl Fn(&ctxguard_companion::port::Stats) -> bool) -> ctxguard_companion::port::Stats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stats = client.stats().unwrap();
        if done(&stats) || std::time::Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let harness = load();
    let emulator = &harness.emulator;
    let context = ConnectContext { min_version: 1, max_version: 1, flags: 0 }.encode();
    let mut ports: Vec<_> = (0..4).map(|pid| connect_raw(emulator, &context, 10 + pid).expect("within MaxConnections")).collect();
    let refused = connect_raw(emulator, &context, 99).expect_err("the fifth connection is refused");
    // STATUS_CONNECTION_COUNT_LIMIT, as FltLib reports it.
    assert_eq!(refused, hresult_from_nt(0xC000_0246_u32.cast_signed()));
    let client_error = Client::connect(&connector(emulator), false).err().unwrap();
    assert!(client_error.to_string().contains("maximum number of clients"), "{client_error}");
    ports.pop().unwrap().close().unwrap();
    let again = Client::connect(&connector(emulator), false).unwrap();
    assert_eq!(again.stats().unwrap().connections, 4);
    drop(again);
    drop(ports);
    assert_clean(emulator);
    unload_clean(emulator);
}

#[test]
fn connect_contexts_are_validated_and_mismatches_name_both_versions() {
    let harness = load();
    let emulator = &harness.emulator;
    let refused = |context: &[u8]| connect_raw(emulator, context, COMPANION_PID).expect_err("refused");
    let good = ConnectContext { min_version: 1, max_version: 1, flags: 0 }.encode();
    assert_eq!(refused(&good[..8]), hresult_from_nt(status::BUFFER_TOO_SMALL));
    assert_eq!(refused(&[]), hresult_from_nt(status::BUFFER_TOO_SMALL));
    assert_eq!(refused(&[0; 24]), hresult_from_nt(status::INVALID_BUFFER_SIZE));
    let mut magic = good;
    magic[0] ^= 0xFF;
    assert_eq!(refused(&magic), hresult_from_nt(status::INVALID_PARAMETER));
    let mut flags = good;
    flags[8] = 0x80;
    assert_eq!(refused(&flags), hresult_from_nt(status::INVALID_PARAMETER));
    let newer = ConnectContext { min_version: 2, max_version: 3, flags: 0 }.encode();
    assert_eq!(refused(&newer), hresult_from_nt(status::REVISION_MISMATCH));

    // A companion that speaks only version 2: the client learns the driver's range and says both.
    let inner = connector(emulator);
    let newer_companion = move |context: &ConnectContext| -> Result<Box<dyn Transport>, TransportError> {
        let wide_probe = context.min_version == 0;
        let context = if wide_probe { *context } else { ConnectContext { min_version: 2, max_version: 2, flags: context.flags } };
        inner.connect(&context)
    };
    let error = Client::connect(&newer_companion, false).err().unwrap();
    assert_eq!(error, PortError::VersionMismatch { driver: Some((1, 1)) });
    assert!(error.to_string().contains("this ctxguard speaks 1..=1, the driver speaks 1..=1"), "{error}");
    assert_clean(emulator);
    unload_clean(emulator);
}

#[test]
fn unload_while_a_client_is_connected() {
    let harness = load();
    let emulator = Arc::clone(&harness.emulator);
    let client = Client::connect(&connector(&emulator), false).unwrap();
    let file = emulator.open(harness.volume, "\\held.txt", &OpenOptions::default()).unwrap();
    assert_eq!(client.stats().unwrap().open_handles, 1);
    emulator.cleanup(&file).unwrap();
    emulator.close(file).unwrap();
    unload_clean(&emulator);
    // The client port was closed by the unload; the next request fails cleanly.
    assert!(client.stats().is_err());
    drop(client);
}

#[test]
fn unload_while_events_are_queued() {
    let harness = load();
    let emulator = Arc::clone(&harness.emulator);
    let context = ConnectContext { min_version: 1, max_version: 1, flags: CONNECT_FLAG_EVENTS }.encode();
    let watcher = connect_raw(&emulator, &context, COMPANION_PID).unwrap();
    for index in 0..50 {
        emulator.open_close(harness.volume, &format!("\\queued{index}.txt"), &OpenOptions::default()).unwrap();
    }
    // Nothing was read: events are waiting in the driver's ring (and one in FltSendMessage).
    let stats = Client::connect(&connector(&emulator), false).unwrap().stats().unwrap();
    assert!(stats.events_queued > 0, "{stats:?}");
    unload_clean(&emulator);
    drop(watcher);
}

#[test]
fn events_under_concurrent_io_are_all_accounted_for() {
    let harness = load();
    let emulator = &*harness.emulator;
    let volume = harness.volume;
    let watcher = Client::connect(&connector(&harness.emulator), true).unwrap();
    let threads = 4;
    let per_thread = 150;
    let received = std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for index in 0..per_thread {
                    let options = OpenOptions { pid: 500 + thread, ..OpenOptions::default() };
                    emulator.open_close(volume, &format!("\\t{thread}\\f{index}.txt"), &options).unwrap();
                }
            });
        }
        // Read while the writers run, until every published event was either delivered here
        // or counted as dropped.
        let counter = Client::connect(&connector(&harness.emulator), false).unwrap();
        let published = u64::from(threads * per_thread * 2);
        let mut received = Vec::new();
        loop {
            let stats = counter.stats().unwrap();
            if stats.events_sent + stats.events_dropped == published && received.len() as u64 == stats.events_sent {
                break;
            }
            match watcher.next_event() {
                Ok(event) => received.push(event),
                // The event in flight may have timed out (a counted drop) while we waited.
                Err(error) => {
                    let stats = counter.stats().unwrap();
                    assert_eq!(stats.events_sent + stats.events_dropped, published, "events stopped early: {error}; {stats:?}");
                }
            }
        }
        received
    });
    // Sequence numbers only grow (delivery order is sequence order), stay within what was
    // published, and the numbers missing are exactly the counted drops (checked below).
    assert!(received.windows(2).all(|pair| pair[0].sequence < pair[1].sequence));
    assert!(received.last().is_none_or(|last| last.sequence <= u64::from(threads * per_thread * 2)));
    let stats = Client::connect(&connector(&harness.emulator), false).unwrap().stats().unwrap();
    let published = u64::from(threads * per_thread * 2);
    assert_eq!(stats.events_sent, received.len() as u64, "{stats:?}");
    assert_eq!(stats.events_sent + stats.events_dropped + stats.events_queued, published, "{stats:?}");
    // Every open has its close, per process, among the delivered events when nothing dropped.
    if stats.events_dropped == 0 {
        for thread in 0..threads {
            let opens = received.iter().filter(|e| e.pid == 500 + thread && e.kind == "open").count();
            let closes = received.iter().filter(|e| e.pid == 500 + thread && e.kind == "close").count();
            assert_eq!((opens, closes), (per_thread as usize, per_thread as usize));
        }
    }
    drop(watcher);
    assert_clean(emulator);
    unload_clean(emulator);
}

#[test]
fn concurrent_clients_connect_ask_and_disconnect() {
    let harness = load();
    let emulator = &harness.emulator;
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..100 {
                    // With three threads the fourth slot is always free: no refusal expected.
                    let client = Client::connect(&connector(emulator), false).unwrap();
                    let stats = client.stats().unwrap();
                    assert!((1..=3).contains(&stats.connections), "{stats:?}");
                    assert!(client.streams().is_ok());
                }
            });
        }
        for index in 0..100 {
            emulator.open_close(harness.volume, &format!("\\busy{index}.txt"), &OpenOptions::default()).unwrap();
        }
    });
    assert_eq!(Client::connect(&connector(emulator), false).unwrap().stats().unwrap().connections, 1);
    assert_clean(emulator);
    unload_clean(emulator);
}
