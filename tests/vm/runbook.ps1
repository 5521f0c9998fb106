<#
.SYNOPSIS
    ctxguard on a test VM: trust, install, load, verify (ctxguard selftest), unload, uninstall.

.DESCRIPTION
    Run from an elevated PowerShell on a disposable Windows 10 (1903+) or 11 VM with Secure Boot
    off. Everything that can be checked from user mode is done by `ctxguard selftest` (in Rust);
    this script only does what needs the system's own tools. See docs/vm.md.

    Steps: test signing (asks for a reboot and stops if it was off) -> import the test certificate
    into LocalMachine Root and TrustedPublisher -> install (pnputil when the package has a signed
    catalog, else the service by hand, as the README describes) -> optionally Driver Verifier's
    Filter Verifier for ctxguard.sys (asks for a reboot) -> fltmc load -> fltmc instances ->
    ctxguard selftest --json --report -> fltmc unload -> uninstall -> the report's exit code.

    NOT RUN ON WINDOWS BY ITS AUTHORS: written from the documentation of bcdedit, certutil,
    pnputil, fltmc and verifier; see docs/vm.md for what was and was not run where.

.PARAMETER Package
    The package directory copied to the VM (ctxguard.exe, ctxguard-test.cer, x64\, arm64\).
.PARAMETER EnableVerifier
    Turn on Filter Verifier for ctxguard.sys (Win11: /ruleclasses 5 37; Win10: /flags 0x10) and
    ask for a reboot; run the script again after it.
.PARAMETER SkipInstall
    The driver is already installed: only load, verify, unload (no uninstall either).
.PARAMETER Report
    Where the JSON report goes (default: selftest-report.json in the package directory).
#>
[CmdletBinding()]
param(
    [string]$Package = $PSScriptRoot,
    [switch]$EnableVerifier,
    [switch]$SkipInstall,
    [string]$Report = ''
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3

function Step([string]$Text) { Write-Host "== $Text" -ForegroundColor Cyan }

# Runs a native command and stops on a non-zero exit code (PowerShell does not).
function Run([string]$Exe, [string[]]$Arguments) {
    Write-Host "> $Exe $($Arguments -join ' ')"
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Exe $($Arguments -join ' ') exited with $LASTEXITCODE" }
}

$Package = (Resolve-Path $Package).Path
if (-not $Report) { $Report = Join-Path $Package 'selftest-report.json' }
$arch = if ($env:PROCESSOR_ARCHITECTURE -eq 'ARM64') { 'arm64' } else { 'x64' }
$driverDir = Join-Path $Package $arch
$exe = Join-Path $Package 'ctxguard.exe'
$service = 'HKLM:\SYSTEM\CurrentControlSet\Services\ctxguard'

$principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run this script from an elevated PowerShell (Run as administrator).'
}
foreach ($file in @($exe, (Join-Path $driverDir 'ctxguard.sys'), (Join-Path $driverDir 'ctxguard.inf'))) {
    if (-not (Test-Path $file)) { throw "$file is missing: pass -Package <the package directory>" }
}

$reboot = $false
if (-not $SkipInstall) {
    Step 'Test signing'
    if (-not ((bcdedit /enum '{current}') -match 'testsigning\s+Yes')) {
        Run bcdedit @('/set', 'testsigning', 'on')
        $reboot = $true
    }

    Step 'Trust the test certificate (LocalMachine Root and TrustedPublisher)'
    $cer = Join-Path $Package 'ctxguard-test.cer'
    foreach ($store in @('Root', 'TrustedPublisher')) {
        Import-Certificate -FilePath $cer -CertStoreLocation "Cert:\LocalMachine\$store" | Out-Null
    }

    Step 'Install'
    if (Test-Path $service) {
        Write-Host 'the ctxguard service exists already; keeping it'
    } elseif (Test-Path (Join-Path $driverDir 'ctxguard.cat')) {
        Run pnputil @('/add-driver', (Join-Path $driverDir 'ctxguard.inf'), '/install')
    } else {
        # No catalog (the Linux-built package): the driver store refuses it, so create the service
        # with the values the INF writes (README, "Without a catalog").
        $inf = Join-Path $driverDir 'ctxguard.inf'
        $altitude = (Select-String -Path $inf -Pattern '^\s*Instance1\.Altitude\s*=\s*"(\d+)"').Matches[0].Groups[1].Value
        Copy-Item (Join-Path $driverDir 'ctxguard.sys') "$env:SystemRoot\System32\drivers\ctxguard.sys" -Force
        Run sc.exe @('create', 'ctxguard', 'type=', 'filesys', 'start=', 'demand', 'error=', 'normal',
            'group=', 'FSFilter Activity Monitor', 'depend=', 'FltMgr', 'binPath=', 'System32\drivers\ctxguard.sys')
        $keys = @($service)
        if ([Environment]::OSVersion.Version.Build -ge 25952) { $keys += "$service\Parameters" }
        foreach ($key in $keys) {
            New-Item "$key\Instances\ctxguard Instance" -Force | Out-Null
            New-ItemProperty $key -Name SupportedFeatures -PropertyType DWord -Value 3 -Force | Out-Null
            New-ItemProperty "$key\Instances" -Name DefaultInstance -Value 'ctxguard Instance' -Force | Out-Null
            New-ItemProperty "$key\Instances\ctxguard Instance" -Name Altitude -Value $altitude -Force | Out-Null
            New-ItemProperty "$key\Instances\ctxguard Instance" -Name Flags -PropertyType DWord -Value 0 -Force | Out-Null
        }
    }
}

if ($EnableVerifier) {
    Step 'Driver Verifier: Filter Verifier for ctxguard.sys'
    if ((verifier /querysettings) -match 'ctxguard\.sys') {
        Write-Host 'already verifying ctxguard.sys'
    } else {
        $win11 = [Environment]::OSVersion.Version.Build -ge 22000
        $options = if ($win11) { @('/ruleclasses', '5', '37') } else { @('/flags', '0x10') }
        Run verifier ($options + @('/driver', 'ctxguard.sys'))
        $reboot = $true
    }
}

if ($reboot) {
    Write-Warning 'A reboot is needed (test signing or Driver Verifier changed). Reboot, then run this script again with the same arguments.'
    if ((Read-Host 'Reboot now? [y/N]') -eq 'y') { Restart-Computer -Force }
    exit 3
}

# From here on, unload and uninstall whatever happens, so that the VM is left clean.
$selftest = 2
try {
    Step 'Load'
    Run fltmc @('load', 'ctxguard')
    Run fltmc @('instances', '-f', 'ctxguard')

    Step 'ctxguard selftest'
    & $exe selftest --json --report $Report
    $selftest = $LASTEXITCODE
    Write-Host "selftest exit code: $selftest (0 pass, 1 a check failed, 2 could not run); report: $Report"
} finally {
    Step 'Unload'
    fltmc unload ctxguard
    if ($LASTEXITCODE -ne 0) { Write-Warning "fltmc unload ctxguard exited with $LASTEXITCODE"; $selftest = [Math]::Max($selftest, 1) }

    if (-not $SkipInstall) {
        Step 'Uninstall'
        $published = (pnputil /enum-drivers | Out-String) -split "`r?`n`r?`n" |
            Where-Object { $_ -match 'Original Name:\s+ctxguard\.inf' } |
            ForEach-Object { if ($_ -match 'Published Name:\s+(oem\d+\.inf)') { $Matches[1] } }
        foreach ($oem in @($published)) { if ($oem) { pnputil /delete-driver $oem /uninstall } }
        if (Test-Path $service) { sc.exe delete ctxguard }
        Remove-Item "$env:SystemRoot\System32\drivers\ctxguard.sys" -ErrorAction SilentlyContinue
        if ($EnableVerifier) { Write-Host 'Driver Verifier stays on until: verifier /reset (then reboot)' }
    }
}

exit $selftest
