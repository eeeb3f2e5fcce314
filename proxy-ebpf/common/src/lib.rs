//! Types and names shared by the kernel programs (`proxy-ebpf`) and the user-space loader
//! (`proxy/src/ebpf`). `no_std`, `#[repr(C)]`, no implicit padding, so both sides agree on every
//! byte. The strings are the program and map names user space looks up; map sizes are set by the
//! loader from config, never hard-coded in kernel code.
#![no_std]

/// The XDP program.
pub const PROG_XDP_GATE: &str = "xdp_gate";
/// The sock_ops program reporting per-connection telemetry of the proxy's listener.
pub const PROG_TELEMETRY: &str = "tcp_telemetry";
/// LRU hash: [`ConnKey`] -> connection start (`bpf_ktime_get_ns`).
pub const MAP_CONN_START: &str = "CONN_START";
/// Ring buffer of [`ConnEvent`]s, one per closed connection.
pub const MAP_CONN_EVENTS: &str = "CONN_EVENTS";

/// LRU hash: source address (IPv6, or IPv4-mapped `::ffff:a.b.c.d`) -> ban expiry in
/// `bpf_ktime_get_ns` nanoseconds (CLOCK_MONOTONIC); `u64::MAX` = no expiry.
pub const MAP_BANNED: &str = "BANNED";
/// LPM tries of denied networks: key [`LpmKeyV4`]/[`LpmKeyV6`] data, value expiry as above.
pub const MAP_DENY_V4: &str = "DENY_V4";
pub const MAP_DENY_V6: &str = "DENY_V6";
/// LPM tries of allowlisted networks (value unused): never dropped, never rate limited.
pub const MAP_ALLOW_V4: &str = "ALLOW_V4";
pub const MAP_ALLOW_V6: &str = "ALLOW_V6";
/// LRU per-CPU hash: source address -> [`SynBucket`].
pub const MAP_SYN_BUCKETS: &str = "SYN_BUCKETS";
/// Array with one [`GateConfig`] at index 0.
pub const MAP_CONFIG: &str = "GATE_CONFIG";
/// Per-CPU array of packet counters, indexed by the `COUNTER_*` constants.
pub const MAP_COUNTERS: &str = "COUNTERS";

pub const COUNTER_PASSED: u32 = 0;
pub const COUNTER_DROPPED_BANNED: u32 = 1;
pub const COUNTER_DROPPED_DENY: u32 = 2;
pub const COUNTER_DROPPED_SYN_RATE: u32 = 3;
pub const COUNTERS: u32 = 4;

/// Most destination ports the SYN limiter watches.
pub const MAX_SYN_PORTS: usize = 8;

/// Runtime settings of the gate, written by user space at load and on reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateConfig {
    /// SYNs per second allowed per source address and CPU; 0 disables the SYN limiter.
    pub syn_rate_per_sec: u32,
    /// Bucket size (burst) of the SYN limiter.
    pub syn_burst: u32,
    /// Destination ports (host byte order) the SYN limiter applies to; 0 = unused slot.
    pub syn_ports: [u16; MAX_SYN_PORTS],
    /// The proxy's listen port (host byte order): connections to it are reported by telemetry.
    pub listen_port: u16,
    pub _pad: u16,
}

/// Identifies a proxied client connection while it is open.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnKey {
    /// Client address (IPv6, or IPv4-mapped).
    pub remote_addr: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
}

/// One closed client connection, as the kernel saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at ESTABLISHED, 0 if not seen.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Bytes received from the client (`tcp_sock.bytes_received`).
    pub bytes_received: u64,
    /// Bytes sent to the client and acknowledged (`tcp_sock.bytes_acked`).
    pub bytes_acked: u64,
    pub remote_addr: [u8; 16],
    /// Smoothed RTT in microseconds.
    pub srtt_us: u32,
    pub total_retrans: u32,
    pub remote_port: u16,
    pub local_port: u16,
    /// TCP state the connection closed from (`BPF_TCP_*`: 1 established (reset), 4 fin-wait-1,
    /// 5 fin-wait-2, 8 close-wait, 9 last-ack, 11 closing ...).
    pub close_state: u32,
}

/// Token bucket of one source on one CPU. Tokens are kept in milli-tokens so refills at low
/// rates are exact with integer arithmetic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynBucket {
    pub milli_tokens: u64,
    pub last_ns: u64,
}

/// An IPv4 address as LPM trie data (network byte order).
pub type LpmKeyV4 = [u8; 4];
/// An IPv6 address as LPM trie data (network byte order).
pub type LpmKeyV6 = [u8; 16];

/// `a.b.c.d` -> `::ffff:a.b.c.d`, the key form of [`MAP_BANNED`].
#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], Copy, contain only integers and arrays of integers,
    // and have no padding (u32, u32, [u16; 8] = 24 bytes; u64, u64 = 16 bytes).
    unsafe impl aya::Pod for super::GateConfig {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SynBucket {}
    // SAFETY: repr(C) integers only; 4 x u64, [u8; 16], 2 x u32, 2 x u16, u32 = 64 bytes, no padding.
    unsafe impl aya::Pod for super::ConnEvent {}
    // SAFETY: repr(C), [u8; 16] + 2 x u16 = 20 bytes, alignment 2, no padding.
    unsafe impl aya::Pod for super::ConnKey {}
}
