//! What an image imports and how fltemu binds it, known before anything runs: each import is
//! emulated (with the documentation it follows), forwarded (`hal.dll` names the kernel now
//! exports itself), or missing, and a load with anything missing is refused with the full list.

use crate::catalog::{self, Emulated};
use crate::pe::{LoadError, ParsedImage};

/// How one import binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Bound to an emulated function (`forwarded_from` is the module the image named when the
    /// import reached the function through a forwarder).
    Emulated {
        /// The emulated function and its documentation (None: emulated, no entry in the catalog).
        entry: Option<Emulated>,
        /// The module the image imports it from, when that module forwards it elsewhere.
        forwarded_from: Option<String>,
    },
    /// Not bound: the load is refused before DriverEntry.
    Missing {
        /// Why.
        reason: &'static str,
    },
}

/// One import of an image and its binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportStatus {
    /// `dll!function` as the image names it (`dll!#N` by ordinal).
    pub name: String,
    /// How it binds.
    pub binding: Binding,
}

/// The module that really exports `dll`'s functions. `hal.dll` is a forwarding stub since the
/// HAL was linked into ntoskrnl.exe (Windows 10 version 2004): its exports forward there.
#[must_use]
pub fn forward(dll: &str) -> &str {
    match dll {
        "hal.dll" => "ntoskrnl.exe",
        other => other,
    }
}

/// Every import of the image in `file` and how it binds.
///
/// # Errors
/// The [`LoadError`] of an image that does not parse.
pub fn report(file: &[u8]) -> Result<Vec<ImportStatus>, LoadError> {
    let parsed = ParsedImage::parse(file)?;
    Ok(parsed
        .imports
        .iter()
        .map(|import| {
            let name = format!("{}!{}", import.dll, import.name);
            let target = forward(&import.dll);
            let binding = if import.ordinal.is_some() {
                Binding::Missing { reason: "import by ordinal: kernel exports are bound by name, and an ordinal names no function fltemu can look up" }
            } else if crate::resolve_import(&import.dll, &import.name).is_some() {
                Binding::Emulated {
                    entry: catalog::find(target, &import.name),
                    forwarded_from: (target != import.dll).then(|| import.dll.clone()),
                }
            } else if matches!(target, "ntoskrnl.exe" | "fltmgr.sys") {
                Binding::Missing { reason: "not emulated" }
            } else {
                Binding::Missing { reason: "module not emulated (fltemu provides ntoskrnl.exe, fltmgr.sys and hal.dll's forwarders)" }
            };
            ImportStatus { name, binding }
        })
        .collect())
}
