//! Records a scenario's calls against their documented results.

use windows_sys::core::HRESULT;

use super::guards::{Attempt, BoolResult, Raw};
use crate::crypto::report::{Outcome, Step, Verdict};

/// What the documentation says a call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// BOOL TRUE (or a non-NULL handle).
    True,
    /// BOOL FALSE with this `GetLastError()` (an HRESULT or a Win32 code, as a u32).
    FalseWith(u32),
    /// This SECURITY_STATUS.
    Status(HRESULT),
    /// Any failing SECURITY_STATUS.
    AnyError,
}

/// Why a scenario stopped early.
#[derive(Debug)]
pub enum Stop {
    /// A prerequisite step did not return what the docs say; later steps depend on it.
    Failed(String),
    /// The scenario cannot run here (absent provider, Wine stub).
    Skip(String),
}

/// Providers reported absent by CryptAcquireContext / NCryptOpenStorageProvider: a SKIP, not a DIFF.
const PROVIDER_ABSENT: &[u32] = &[
    0x8009_0013, // NTE_BAD_PROVIDER
    0x8009_0014, // NTE_BAD_PROV_TYPE
    0x8009_0017, // NTE_PROV_TYPE_NOT_DEF
    0x8009_0019, // NTE_KEYSET_NOT_DEF
    0x8009_001B, // NTE_PROV_TYPE_NO_MATCH
    0x8009_001E, // NTE_PROV_DLL_NOT_FOUND
];

/// Symbolic names for the codes the scenarios meet, to make reports readable.
pub fn code_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "ERROR_SUCCESS",
        0x6 => "ERROR_INVALID_HANDLE",
        0x57 => "ERROR_INVALID_PARAMETER",
        0xAA => "ERROR_BUSY",
        0x8000_4001 => "E_NOTIMPL",
        0x8009_0001 => "NTE_BAD_UID",
        0x8009_0009 => "NTE_BAD_FLAGS",
        0x8009_000F => "NTE_EXISTS",
        0x8009_0013 => "NTE_BAD_PROVIDER",
        0x8009_0014 => "NTE_BAD_PROV_TYPE",
        0x8009_0016 => "NTE_BAD_KEYSET",
        0x8009_0017 => "NTE_PROV_TYPE_NOT_DEF",
        0x8009_0019 => "NTE_KEYSET_NOT_DEF",
        0x8009_001B => "NTE_PROV_TYPE_NO_MATCH",
        0x8009_001E => "NTE_PROV_DLL_NOT_FOUND",
        0x8009_001F => "NTE_BAD_KEYSET_PARAM",
        0x8009_0022 => "NTE_SILENT_CONTEXT",
        0x8009_0026 => "NTE_INVALID_HANDLE",
        0x8009_0027 => "NTE_INVALID_PARAMETER",
        0x8009_0029 => "NTE_NOT_SUPPORTED",
        0x8009_200F => "CRYPT_E_PENDING_CLOSE",
        0x8000_FFFF => "E_UNEXPECTED",
        _ => return None,
    })
}

/// `0x80090009 (NTE_BAD_FLAGS)`.
pub fn code(code: u32) -> String {
    match code_name(code) {
        Some(name) => format!("{code:#010x} ({name})"),
        None => format!("{code:#010x}"),
    }
}

#[allow(clippy::cast_sign_loss, reason = "HRESULTs are reported as their u32 bit pattern")]
fn status_bits(status: HRESULT) -> u32 {
    status as u32
}

fn describe(expect: Expect) -> String {
    match expect {
        Expect::True => "TRUE".to_owned(),
        Expect::FalseWith(c) => format!("FALSE, GetLastError {}", code(c)),
        Expect::Status(s) => code(status_bits(s)),
        Expect::AnyError => "an error status".to_owned(),
    }
}

/// The steps of one scenario pass.
#[derive(Default)]
pub struct Recorder {
    steps: Vec<Step>,
}

impl Recorder {
    /// Records a BOOL call; returns whether it matched.
    pub fn bool(&mut self, call: &str, result: BoolResult, expect: Expect) -> bool {
        let matches = match expect {
            Expect::True => result.ok,
            Expect::FalseWith(c) => !result.ok && result.last_error == c,
            Expect::Status(_) | Expect::AnyError => false,
        };
        let step = Step {
            call: call.to_owned(),
            expected: describe(expect),
            returned: if result.ok { "TRUE" } else { "FALSE" }.to_owned(),
            last_error: (!result.ok).then_some(result.last_error),
            matches,
        };
        self.steps.push(step);
        matches
    }

    /// Records a SECURITY_STATUS call; returns whether it matched.
    pub fn status(&mut self, call: &str, status: HRESULT, expect: Expect) -> bool {
        let matches = match expect {
            Expect::Status(s) => status == s,
            Expect::AnyError => status != 0,
            Expect::True | Expect::FalseWith(_) => false,
        };
        self.steps.push(Step {
            call: call.to_owned(),
            expected: describe(expect),
            returned: code(status_bits(status)),
            last_error: None,
            matches,
        });
        matches
    }

    /// Records a raw result of either kind.
    pub fn raw(&mut self, call: &str, raw: Raw, expect: Expect) -> bool {
        match raw {
            Raw::Bool(b) => self.bool(call, b, expect),
            Raw::Status(s) => self.status(call, s, expect),
        }
    }

    /// Records an observed fact (not a return value), e.g. "same handle".
    pub fn fact(&mut self, what: &str, expected: &str, observed: String, matches: bool) -> bool {
        self.steps.push(Step {
            call: what.to_owned(),
            expected: expected.to_owned(),
            returned: observed,
            last_error: None,
            matches,
        });
        matches
    }

    /// Records a creating call that must succeed for the scenario to go on; gives the guard.
    pub fn require<T>(&mut self, call: &str, attempt: Attempt<T>) -> Result<T, Stop> {
        let expect = match attempt.raw {
            Raw::Bool(_) => Expect::True,
            Raw::Status(_) => Expect::Status(0),
        };
        self.raw(call, attempt.raw, expect);
        attempt.value.ok_or_else(|| Stop::Failed(format!("{call} failed")))
    }

    /// Like [`Recorder::require`], but an absent provider is a SKIP rather than a DIFF.
    pub fn require_provider<T>(&mut self, call: &str, attempt: Attempt<T>) -> Result<T, Stop> {
        let code = match attempt.raw {
            Raw::Bool(b) if !b.ok => Some(b.last_error),
            Raw::Status(s) if s != 0 => Some(status_bits(s)),
            _ => None,
        };
        if let Some(c) = code.filter(|c| PROVIDER_ABSENT.contains(c)) {
            return Err(Stop::Skip(format!("provider absent here: {call} → {}", self::code(c))));
        }
        self.require(call, attempt)
    }

    /// Records a creating call that must fail as documented; a guard it returned anyway is
    /// released on the spot (dropped), so an unexpected success leaks nothing.
    pub fn refuse<T>(&mut self, call: &str, attempt: Attempt<T>, expect: Expect) -> bool {
        let matches = self.raw(call, attempt.raw, expect);
        drop(attempt.value);
        matches
    }

    /// The outcome of the pass: SKIP if skipped, DIFF if any step differs, else PASS.
    pub fn finish(self, result: Result<(), Stop>) -> Outcome {
        match result {
            Err(Stop::Skip(reason)) => {
                let mut outcome = Outcome::skip(reason);
                outcome.steps = self.steps;
                outcome
            }
            Ok(()) | Err(Stop::Failed(_)) => {
                let stopped = match result {
                    Err(Stop::Failed(why)) => Some(why),
                    _ => None,
                };
                let verdict =
                    if stopped.is_none() && self.steps.iter().all(|s| s.matches) { Verdict::Pass } else { Verdict::Diff };
                Outcome { verdict, skip_reason: None, stopped, steps: self.steps }
            }
        }
    }
}
