//! Portcullis' kernel side: the XDP gate and connection telemetry programs, and the `#[repr(C)]`
//! types shared with user space. Only the crate skeleton exists so far; the programs arrive with
//! the eBPF issue (DESIGN.md section 6). Must not depend on anything but `core` and aya-ebpf.
#![no_std]
