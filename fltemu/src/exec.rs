//! Running driver code without letting it kill the process.
//!
//! Every entry into the driver runs on an emulator-owned worker thread. A handler for the
//! synchronous fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP; on an alternate signal
//! stack) hands a fault of driver code to the exception dispatcher (`seh.rs`); a signal another
//! process or thread sent (kill, tgkill, sigqueue) gets its default action; any other fault on
//! a driver thread is recorded in the worker's slot, wakes the waiting caller through a futex and
//! parks the faulting thread forever; KeBugCheckEx does the same from ordinary code. The caller sees a [`Stop`]. Parked threads are leaked by design: a
//! crashed kernel thread never resumes either.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};

/// How a call into the driver ended abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The driver faulted (SIGSEGV/SIGBUS).
    Crash {
        /// The faulting data address.
        address: usize,
        /// The faulting instruction address.
        rip: usize,
        /// `rip` relative to the image base, when the fault was inside the driver image.
        rva: Option<u32>,
        /// The signal number.
        signal: i32,
    },
    /// The driver called KeBugCheckEx.
    BugCheck {
        /// The bug check code.
        code: u32,
        /// Parameters 1-4.
        params: [usize; 4],
        /// The image RVA of the parameter that names an instruction (0x1E: the exception
        /// address; 0x50: the faulting RIP), taken when the bug check happened (the image may be
        /// gone, or another loaded, by the time the report is read).
        rva: Option<u32>,
    },
    /// A driver call did not return within [`Config::call_timeout`](crate::Config) (an endless
    /// loop, a deadlock, or an FltSendMessage nobody answers); its thread is abandoned.
    Hang {
        /// How long fltemu waited, in milliseconds.
        after_ms: u64,
    },
}

const IDLE: u32 = 0;
const POSTED: u32 = 1;
const DONE: u32 = 2;
const STOPPED: u32 = 3;
const EXIT: u32 = 4;

/// One worker's mailbox.
struct Slot {
    state: AtomicU32,
    job: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    // Written by the signal handler (async-signal-safe: plain atomics).
    fault_address: AtomicUsize,
    fault_rip: AtomicUsize,
    fault_signal: AtomicU32,
    stop: Mutex<Option<Stop>>,
    /// A panic of fltemu's own code in a job, re-raised in the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

thread_local! {
    static CURRENT_SLOT: Cell<*const Slot> = const { Cell::new(core::ptr::null()) };
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a live, aligned u32; returns at once if the value differs.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, core::ptr::null::<libc::timespec>());
    }
}

pub(crate) fn futex_wait_for(word: &AtomicU32, expected: u32, timeout: std::time::Duration) {
    #[allow(clippy::cast_possible_wrap)]
    let spec = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(timeout.subsec_nanos()) };
    // SAFETY: FUTEX_WAIT on a live, aligned u32 with a relative timeout.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, &raw const spec);
    }
}

pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32; async-signal-safe (a plain system call).
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
}

/// The image range, so the fault handler can compute RVAs (set by the emulator).
pub static IMAGE_BASE: AtomicUsize = AtomicUsize::new(0);
/// The image size.
pub static IMAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The RVA of `address` when it lies inside the loaded image.
#[must_use]
pub fn image_rva(address: usize) -> Option<u32> {
    let base = IMAGE_BASE.load(Ordering::Relaxed);
    let size = IMAGE_SIZE.load(Ordering::Relaxed);
    #[allow(clippy::cast_possible_truncation)] // images are smaller than 4 GiB
    (address >= base && address < base + size).then(|| (address - base) as u32)
}

/// Parks the current thread forever (a crashed kernel thread never returns).
fn park_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions; it only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// Gives `signal` its default action again and makes it pending, so it ends the process as it
/// would have without fltemu (a trap does not repeat by itself when the handler returns).
fn default_action(signal: i32) {
    // SAFETY: resetting a signal disposition is async-signal-safe.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
    // SAFETY: raise is async-signal-safe; the signal stays blocked until the handler returns.
    unsafe { libc::raise(signal) };
}

/// True when `si_code` says a process sent the signal (SI_USER, SI_QUEUE, SI_TKILL and the
/// other codes ≤ 0, signal(7) / sigaction(2)) rather than the kernel raising it for a fault.
#[must_use]
pub fn sent_by_a_process(si_code: i32) -> bool {
    si_code <= 0
}

extern "C" fn on_fault(signal: i32, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let slot = CURRENT_SLOT.with(Cell::get);
    if slot.is_null() {
        // Not a driver thread: the signal is not fltemu's to handle.
        default_action(signal);
        return;
    }
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let info = unsafe { &*info };
    if sent_by_a_process(info.si_code) {
        // kill/tgkill/sigqueue: not a fault of the code this thread runs (there is no faulting
        // instruction and si_addr holds the sender's pid), so it is not an exception.
        default_action(signal);
        return;
    }
    // SAFETY: si_addr is valid for the synchronous fault signals this handler serves (a signal
    // a process sent was excluded above).
    let address = unsafe { info.si_addr() } as usize;
    let ucontext = context.cast::<libc::ucontext_t>();
    // A fault in driver code becomes an exception dispatched through the driver's handlers.
    if crate::seh::redirect_fault(signal, info.si_code, address, ucontext) {
        return;
    }
    #[allow(clippy::cast_sign_loss)] // a saved register: its bits are the address
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers on x86_64.
    let at = unsafe { (*ucontext).uc_mcontext.gregs[libc::REG_RIP as usize] } as usize;
    if matches!(signal, libc::SIGFPE | libc::SIGILL | libc::SIGTRAP) && image_rva(at).is_none() && image_rva(at.wrapping_sub(1)).is_none() {
        // An arithmetic fault, illegal instruction or breakpoint in fltemu's own code (or a
        // signal sent to the thread): fltemu only models these for driver code.
        default_action(signal);
        return;
    }
    let rip = at;
    // SAFETY: `slot` points into an Arc<Slot> kept alive by the thread that owns it (this one).
    let slot = unsafe { &*slot };
    slot.fault_address.store(address, Ordering::Relaxed);
    slot.fault_rip.store(rip, Ordering::Relaxed);
    #[allow(clippy::cast_sign_loss)]
    slot.fault_signal.store(signal as u32, Ordering::Relaxed);
    slot.state.store(STOPPED, Ordering::Release);
    futex_wake(&slot.state);
    park_forever();
}

fn install_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP] {
            // SAFETY: a zeroed sigaction is a valid starting value.
            let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: installs a handler for a synchronous fault signal; `action` is valid.
            unsafe { libc::sigaction(signal, &raw const action, core::ptr::null_mut()) };
        }
    });
}

/// Records a bug check on the current worker and parks it. Called by the KeBugCheckEx export.
pub fn bug_check(code: u32, params: [usize; 4]) -> ! {
    let slot = CURRENT_SLOT.with(Cell::get);
    if !slot.is_null() {
        // SAFETY: the slot outlives its worker thread (the thread holds an Arc).
        let slot = unsafe { &*slot };
        let rva = match code {
            0x1E | 0x7E => image_rva(params[1]),
            0x50 => image_rva(params[2]),
            _ => None,
        };
        *slot.stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(Stop::BugCheck { code, params, rva });
        slot.state.store(STOPPED, Ordering::Release);
        futex_wake(&slot.state);
    }
    park_forever();
}

const ALT_STACK_SIZE: usize = 64 * 1024;

fn worker_main(slot: &Arc<Slot>) {
    // SAFETY: anonymous mapping for the alternate signal stack, owned by this thread.
    let stack = unsafe {
        libc::mmap(core::ptr::null_mut(), ALT_STACK_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if stack != libc::MAP_FAILED {
        let alt = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: ALT_STACK_SIZE };
        // SAFETY: `alt` describes the mapping just made; it stays mapped while the thread runs
        // (and forever if the thread parks after a fault).
        unsafe { libc::sigaltstack(&raw const alt, core::ptr::null_mut()) };
    }
    CURRENT_SLOT.with(|c| c.set(Arc::as_ptr(slot)));
    crate::seh::note_stack_bounds();
    loop {
        let state = slot.state.load(Ordering::Acquire);
        match state {
            POSTED => {
                let job = slot.job.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(job) = job
                    && let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                {
                    *slot.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload);
                }
                slot.state.store(DONE, Ordering::Release);
                futex_wake(&slot.state);
            }
            EXIT => break,
            other => futex_wait(&slot.state, other),
        }
    }
    CURRENT_SLOT.with(|c| c.set(core::ptr::null()));
    if stack != libc::MAP_FAILED {
        let disable = libc::stack_t { ss_sp: core::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
        // SAFETY: disables this thread's alternate stack before unmapping it.
        unsafe { libc::sigaltstack(&raw const disable, core::ptr::null_mut()) };
        // SAFETY: the stack mapping is no longer in use by this thread.
        unsafe { libc::munmap(stack, ALT_STACK_SIZE) };
    }
}

/// A pool of worker threads that run driver code.
pub struct Workers {
    /// This pool's number, unique in the process (the key of [`OWN_WORKER`]).
    id: usize,
    idle: Mutex<Vec<Arc<Slot>>>,
    all: Mutex<Vec<Arc<Slot>>>,
}

static NEXT_POOL: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The worker this submitting thread used last, and its pool: a caller that hands every job
    /// to the same worker takes no shared lock per job, and the pair stays where the scheduler
    /// put it (each job is then a wake-up of a thread whose cache and CPU are the caller's
    /// partner's), as on Windows where a callback runs on the thread that issued the I/O.
    static OWN_WORKER: std::cell::RefCell<Option<(usize, Arc<Slot>)>> = const { std::cell::RefCell::new(None) };
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    /// An empty pool; installs the fault handlers once per process.
    #[must_use]
    pub fn new() -> Self {
        install_handlers();
        Self { id: NEXT_POOL.fetch_add(1, Ordering::Relaxed), idle: Mutex::new(Vec::new()), all: Mutex::new(Vec::new()) }
    }

    fn take(&self) -> Arc<Slot> {
        let own = OWN_WORKER.with(|own| {
            let mut own = own.borrow_mut();
            match own.take() {
                Some((pool, slot)) if pool == self.id => Some(slot),
                other => {
                    *own = other;
                    None
                }
            }
        });
        if let Some(slot) = own {
            return slot;
        }
        if let Some(slot) = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return slot;
        }
        let slot = Arc::new(Slot {
            state: AtomicU32::new(IDLE),
            job: Mutex::new(None),
            fault_address: AtomicUsize::new(0),
            fault_rip: AtomicUsize::new(0),
            fault_signal: AtomicU32::new(0),
            stop: Mutex::new(None),
            panic: Mutex::new(None),
        });
        let for_thread = Arc::clone(&slot);
        std::thread::Builder::new()
            .name("fltemu-driver".into())
            .stack_size(1 << 20)
            .spawn(move || worker_main(&for_thread))
            .expect("fltemu could not start a worker thread");
        self.all.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&slot));
        slot
    }

    /// Runs `job` on a worker and waits for it, at most `timeout`.
    ///
    /// # Errors
    /// [`Stop`] when the job faulted or bug-checked (that worker is then parked forever) or did
    /// not finish in time (that worker is abandoned).
    pub fn run<T: Send + 'static>(&self, timeout: std::time::Duration, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Stop> {
        let slot = self.take();
        let result: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&result);
        // The seeded schedule numbers jobs per submitting thread (see crate::schedule).
        let lane = crate::schedule::next_lane();
        *slot.job.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(move || {
            crate::schedule::begin_job(lane);
            let value = job();
            *sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
        }));
        slot.state.store(POSTED, Ordering::Release);
        futex_wake(&slot.state);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match slot.state.load(Ordering::Acquire) {
                DONE => break,
                STOPPED => return Err(Self::stop_of(&slot)),
                other => {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        #[allow(clippy::cast_possible_truncation)]
                        return Err(Stop::Hang { after_ms: timeout.as_millis() as u64 });
                    }
                    futex_wait_for(&slot.state, other, deadline - now);
                }
            }
        }
        slot.state.store(IDLE, Ordering::Release);
        let panic = slot.panic.lock().unwrap_or_else(PoisonError::into_inner).take();
        let spare = OWN_WORKER.with(|own| {
            let mut own = own.borrow_mut();
            if own.is_none() {
                *own = Some((self.id, slot));
                None
            } else {
                Some(slot)
            }
        });
        if let Some(slot) = spare {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(slot);
        }
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        let value = result.lock().unwrap_or_else(PoisonError::into_inner).take();
        Ok(value.expect("a finished job always stores its result"))
    }

    fn stop_of(slot: &Slot) -> Stop {
        if let Some(stop) = slot.stop.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return stop;
        }
        let rip = slot.fault_rip.load(Ordering::Relaxed);
        let base = IMAGE_BASE.load(Ordering::Relaxed);
        let size = IMAGE_SIZE.load(Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation)]
        let rva = (rip >= base && rip < base + size).then(|| (rip - base) as u32);
        #[allow(clippy::cast_possible_wrap)]
        Stop::Crash { address: slot.fault_address.load(Ordering::Relaxed), rip, rva, signal: slot.fault_signal.load(Ordering::Relaxed) as i32 }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Every idle worker exits, those kept by a submitting thread as its own included (no
        // job runs: dropping needs `&mut self`); a parked or abandoned one is left as it is.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for slot in self.all.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            if slot.state.compare_exchange(IDLE, EXIT, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                futex_wake(&slot.state);
            }
        }
    }
}

/// An IRQL value.
pub type Irql = u8;
/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: Irql = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: Irql = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: Irql = 2;

/// The x64 kernel stack a driver thread gets (KERNEL_STACK_SIZE, 24 KiB).
pub const KERNEL_STACK_SIZE: usize = 0x6000;

thread_local! {
    /// The stack pointer where the outermost call into the driver began (0: not in the driver).
    static STACK_TOP: Cell<usize> = const { Cell::new(0) };
}

/// The current stack pointer.
#[inline]
fn stack_pointer() -> usize {
    let pointer: usize;
    // SAFETY: reads RSP into a register; no memory is touched.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) pointer, options(nomem, nostack, preserves_flags)) };
    pointer
}

/// Runs `call` (a call into the driver), measuring stack depth from here; nested calls (a
/// cleanup callback inside FltReleaseContext) keep the outermost starting point. The outermost
/// call also checks that the driver released its spin locks.
pub fn driver_call<R>(call: impl FnOnce() -> R) -> R {
    let outer = STACK_TOP.with(Cell::get);
    if outer == 0 {
        STACK_TOP.with(|c| c.set(stack_pointer()));
    }
    let depth = CALL_DEPTH.with(|c| c.replace(c.get() + 1));
    // A nested call runs inside an export: remember which, so an exception that would leave the
    // callback through that export's frames can name it.
    let crossed = (depth > 0).then(|| CROSSED_EXPORT.with(|c| c.replace(LAST_EXPORT.with(Cell::get))));
    let result = call();
    CALL_DEPTH.with(|c| c.set(depth));
    if let Some(previous) = crossed {
        CROSSED_EXPORT.with(|c| c.set(previous));
    }
    if outer == 0 {
        STACK_TOP.with(|c| c.set(0));
        // A callback must release every spin lock it took before it returns (wdm.h spin-lock
        // rules); the worker thread then runs other callbacks, so its record starts afresh.
        if crate::sync::take_critical_regions() != 0 {
            crate::objects::misuse("KeEnterCriticalRegion", crate::objects::ObjectKind::CriticalRegion, "a driver callback returned inside a critical region");
        }
        if crate::nt::take_held_spin_locks() != 0
            && let Some(inner) = crate::state::current()
        {
            inner.violation(crate::verifier::Violation::InvalidParameter {
                function: "KeAcquireSpinLockRaiseToDpc",
                reason: "a driver callback returned holding a spin lock",
            });
        }
    }
    result
}

thread_local! {
    /// How many driver calls are running on this thread (1: a callback fltemu called; 2: a
    /// callback an export ran from inside driver code, such as a context cleanup).
    static CALL_DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The export the innermost nested driver call runs inside ("" when none).
    static CROSSED_EXPORT: Cell<&'static str> = const { Cell::new("") };
    /// The export this thread entered last.
    static LAST_EXPORT: Cell<&'static str> = const { Cell::new("") };
}

/// Notes the export the current thread has entered (called by every export's accounting).
pub fn note_export(function: &'static str) {
    LAST_EXPORT.with(|c| c.set(function));
}

/// How many driver calls are running on this thread.
#[must_use]
pub fn call_depth() -> usize {
    CALL_DEPTH.with(Cell::get)
}

/// The export whose frames lie between the innermost driver call and the driver code that
/// called that export ("" when the innermost call is not nested).
#[must_use]
pub fn crossed_export() -> &'static str {
    CROSSED_EXPORT.with(Cell::get)
}

/// The stack pointer where the outermost driver call began on this thread (0: not in the
/// driver); `__chkstk` measures new frames against it.
#[must_use]
pub fn stack_top() -> usize {
    STACK_TOP.with(Cell::get)
}

/// Bytes of stack used since the outermost driver call began (0 outside the driver). Sampled by
/// every export, so it is a lower bound of the driver's real depth.
#[must_use]
pub fn stack_depth() -> usize {
    let top = STACK_TOP.with(Cell::get);
    if top == 0 { 0 } else { top.saturating_sub(stack_pointer()) }
}

thread_local! {
    static IRQL: Cell<Irql> = const { Cell::new(PASSIVE_LEVEL) };
    static PID: Cell<u32> = const { Cell::new(4) };
    static OPERATION: Cell<crate::Operation> = const { Cell::new(crate::Operation::Other) };
}

/// The current thread's emulated IRQL.
#[must_use]
pub fn irql() -> Irql {
    IRQL.with(Cell::get)
}

/// The current thread's emulated process id (PsGetCurrentProcessId).
#[must_use]
pub fn current_pid() -> u32 {
    PID.with(Cell::get)
}

/// The operation whose callback the current thread is running (for call counts).
#[must_use]
pub fn operation() -> crate::Operation {
    OPERATION.with(Cell::get)
}

/// Sets the current thread's IRQL, process and operation for a driver call.
pub fn enter(irql: Irql, pid: u32, operation: crate::Operation) {
    IRQL.with(|c| c.set(irql));
    PID.with(|c| c.set(pid));
    OPERATION.with(|c| c.set(operation));
}

/// Sets only the IRQL (callbacks inside a call run at their own documented IRQL).
pub fn set_irql(irql: Irql) -> Irql {
    IRQL.with(|c| c.replace(irql))
}

/// Sets only the operation, returning the previous one.
pub fn set_operation(operation: crate::Operation) -> crate::Operation {
    OPERATION.with(|c| c.replace(operation))
}
