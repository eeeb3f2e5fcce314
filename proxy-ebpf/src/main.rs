//! The XDP gate: drops packets from banned sources (LRU hash with expiry), from denied networks
//! (LPM tries, IPv4 and IPv6), and TCP SYNs to the proxy's ports above a per-source rate
//! (LRU per-CPU token buckets), counting every decision in per-CPU counters. Parses Ethernet with
//! up to two VLAN tags, IPv4 and IPv6; everything else passes. Every packet access goes through
//! the bounds-checked [`ptr_at`], which is what the verifier needs. Must not: keep state other
//! than these maps, or drop anything it cannot attribute to a rule.
#![no_std]
#![no_main]

use core::mem;

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::bindings::{
    BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
    BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{map, sock_ops, xdp};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::{SockOpsContext, XdpContext};
use portcullis_ebpf_common::{
    v4_mapped, ConnEvent, ConnKey, GateConfig, SynBucket, COUNTERS as N_COUNTERS, COUNTER_DROPPED_BANNED,
    COUNTER_DROPPED_DENY, COUNTER_DROPPED_SYN_RATE, COUNTER_PASSED, MAX_SYN_PORTS,
};

// Sizes here are placeholders: the loader sets max_entries from config.
#[map(name = "BANNED")]
static BANNED: LruHashMap<[u8; 16], u64> = LruHashMap::with_max_entries(1024, 0);
#[map(name = "DENY_V4")]
static DENY_V4: LpmTrie<[u8; 4], u64> = LpmTrie::with_max_entries(1024, 0);
#[map(name = "DENY_V6")]
static DENY_V6: LpmTrie<[u8; 16], u64> = LpmTrie::with_max_entries(1024, 0);
#[map(name = "ALLOW_V4")]
static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(1024, 0);
#[map(name = "ALLOW_V6")]
static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(1024, 0);
#[map(name = "SYN_BUCKETS")]
static SYN_BUCKETS: LruPerCpuHashMap<[u8; 16], SynBucket> = LruPerCpuHashMap::with_max_entries(1024, 0);
#[map(name = "GATE_CONFIG")]
static GATE_CONFIG: Array<GateConfig> = Array::with_max_entries(1, 0);
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(N_COUNTERS, 0);
#[map(name = "CONN_START")]
static CONN_START: LruHashMap<ConnKey, u64> = LruHashMap::with_max_entries(1024, 0);
#[map(name = "CONN_EVENTS")]
static CONN_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

#[xdp]
pub fn xdp_gate(ctx: XdpContext) -> u32 {
    match try_gate(&ctx) {
        Ok(action) => action,
        // Malformed or truncated headers are not ours to judge.
        Err(()) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p lie inside the packet.
    Ok(unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn pass() -> Result<u32, ()> {
    count(COUNTER_PASSED);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn drop_for(ctx: &XdpContext, counter: u32) -> Result<u32, ()> {
    count(counter);
    // Diagnostics at debug level only: user space leaves AYA_LOG_LEVEL below debug unless the
    // proxy runs with debug logging, so this costs one global load per drop otherwise.
    aya_log_ebpf::debug!(ctx, "xdp_gate: drop (reason counter {})", counter);
    Ok(xdp_action::XDP_DROP)
}

#[inline(always)]
fn live(expiry: u64, now: u64) -> bool {
    expiry > now
}

/// What the allow/deny tries say about a source address.
enum Rule {
    Allow,
    Deny,
    None,
}

/// Allowlist first (never dropped), then a live deny entry; the same for IPv4 and IPv6 keys.
#[inline(always)]
fn network_rule<K>(allow: &LpmTrie<K, u8>, deny: &LpmTrie<K, u64>, key: &Key<K>, now: u64) -> Rule {
    if allow.get(key).is_some() {
        return Rule::Allow;
    }
    match deny.get(key) {
        Some(exp) if live(*exp, now) => Rule::Deny,
        _ => Rule::None,
    }
}

fn try_gate(ctx: &XdpContext) -> Result<u32, ()> {
    let mut ether_type = u16::from_be(read::<u16>(ctx, 12)?);
    let mut off = ETH_HLEN;
    // Up to two VLAN tags (802.1Q, QinQ), a bounded loop the verifier accepts.
    for _ in 0..2 {
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            ether_type = u16::from_be(read::<u16>(ctx, off + 2)?);
            off += 4;
        }
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let (src, l4_off, proto) = match ether_type {
        ETH_P_IP => {
            let vihl: u8 = read(ctx, off)?;
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return pass();
            }
            let proto: u8 = read(ctx, off + 9)?;
            let src4: [u8; 4] = read(ctx, off + 12)?;
            match network_rule(&ALLOW_V4, &DENY_V4, &Key::new(32, src4), now) {
                Rule::Allow => return pass(),
                Rule::Deny => return drop_for(ctx, COUNTER_DROPPED_DENY),
                Rule::None => {}
            }
            (v4_mapped(src4), off + ihl, proto)
        }
        ETH_P_IPV6 => {
            let next: u8 = read(ctx, off + 6)?;
            let src6: [u8; 16] = read(ctx, off + 8)?;
            match network_rule(&ALLOW_V6, &DENY_V6, &Key::new(128, src6), now) {
                Rule::Allow => return pass(),
                Rule::Deny => return drop_for(ctx, COUNTER_DROPPED_DENY),
                Rule::None => {}
            }
            // Extension headers are not walked: a SYN behind one is not rate limited.
            (src6, off + 40, next)
        }
        _ => return pass(),
    };

    // SAFETY: the value reference is used immediately, before any other map operation.
    if let Some(exp) = unsafe { BANNED.get(&src) } {
        if live(*exp, now) {
            return drop_for(ctx, COUNTER_DROPPED_BANNED);
        }
    }

    if proto == IPPROTO_TCP {
        // One bounds check for the first 14 bytes of the TCP header: the verifier tracks a
        // variable (IHL-dependent) offset through one pointer, not through two computed apart.
        let tcp: [u8; 14] = read(ctx, l4_off)?;
        let flags = tcp[13];
        if flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0 {
            let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            if !syn_allowed(&src, dport, now) {
                return drop_for(ctx, COUNTER_DROPPED_SYN_RATE);
            }
        }
    }
    pass()
}

/// Per-source, per-CPU token bucket for SYNs to the configured ports.
#[inline(always)]
fn syn_allowed(src: &[u8; 16], dport: u16, now: u64) -> bool {
    let Some(cfg) = GATE_CONFIG.get(0) else { return true };
    if cfg.syn_rate_per_sec == 0 {
        return true;
    }
    let mut watched = false;
    for i in 0..MAX_SYN_PORTS {
        if cfg.syn_ports[i] != 0 && cfg.syn_ports[i] == dport {
            watched = true;
        }
    }
    if !watched {
        return true;
    }
    let burst_milli = (cfg.syn_burst.max(1) as u64) * 1000;
    match SYN_BUCKETS.get_ptr_mut(src) {
        Some(b) => {
            // SAFETY: per-CPU value owned by this CPU for the duration of the program.
            let b = unsafe { &mut *b };
            let elapsed = now.saturating_sub(b.last_ns);
            // milli-tokens gained = elapsed_ns * rate / 1e6, capped at the burst.
            let gained = (elapsed / 1000) * (cfg.syn_rate_per_sec as u64) / 1000;
            let tokens = (b.milli_tokens + gained).min(burst_milli);
            if gained > 0 {
                b.last_ns = now;
            }
            if tokens >= 1000 {
                b.milli_tokens = tokens - 1000;
                true
            } else {
                b.milli_tokens = tokens;
                false
            }
        }
        None => {
            let fresh = SynBucket { milli_tokens: burst_milli - 1000, last_ns: now };
            let _ = SYN_BUCKETS.insert(src, &fresh, 0);
            true
        }
    }
}

/// Per-connection telemetry for the proxy's listener: remembers when a client connection is
/// established and, when it closes, reports its bytes, smoothed RTT, retransmits and close state
/// through the ring buffer. Always returns 1 (the sock_ops "continue" reply).
#[sock_ops]
pub fn tcp_telemetry(ctx: SockOpsContext) -> u32 {
    let _ = try_telemetry(&ctx);
    1
}

#[inline(always)]
fn conn_key(ctx: &SockOpsContext) -> ConnKey {
    let ops = ctx.ops;
    let remote_addr = if ctx.family() == 2 {
        v4_mapped(ctx.remote_ip4().to_ne_bytes())
    } else {
        // Context fields must be loaded at constant offsets from the context pointer, one 32-bit
        // word at a time (the verifier refuses a copied or offset context pointer).
        // SAFETY: ops is the kernel's bpf_sock_ops; each read is a single aligned u32 load.
        let w = unsafe {
            [
                core::ptr::read_volatile(core::ptr::addr_of!((*ops).remote_ip6[0])),
                core::ptr::read_volatile(core::ptr::addr_of!((*ops).remote_ip6[1])),
                core::ptr::read_volatile(core::ptr::addr_of!((*ops).remote_ip6[2])),
                core::ptr::read_volatile(core::ptr::addr_of!((*ops).remote_ip6[3])),
            ]
        };
        let (a, b, c, d) = (w[0].to_ne_bytes(), w[1].to_ne_bytes(), w[2].to_ne_bytes(), w[3].to_ne_bytes());
        [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
    };
    ConnKey { remote_addr, remote_port: u32::from_be(ctx.remote_port()) as u16, local_port: ctx.local_port() as u16 }
}

fn try_telemetry(ctx: &SockOpsContext) -> Result<(), ()> {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB {
        return Ok(());
    }
    let Some(cfg) = GATE_CONFIG.get(0) else { return Ok(()) };
    if cfg.listen_port == 0 || ctx.local_port() as u16 != cfg.listen_port {
        return Ok(());
    }
    let key = conn_key(ctx);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        let _ = ctx.set_cb_flags((BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG) as i32);
        let _ = CONN_START.insert(&key, &now, 0);
        return Ok(());
    }
    if ctx.arg(1) != BPF_TCP_CLOSE {
        return Ok(());
    }
    // SAFETY: the value is copied out at once.
    let start_ns = unsafe { CONN_START.get(&key) }.copied().unwrap_or(0);
    let _ = CONN_START.remove(&key);
    let ops = ctx.ops;
    // SAFETY: ctx.ops points at the kernel's bpf_sock_ops for this callback; fields are read
    // one by one, as the verifier requires for context access.
    let (bytes_received, bytes_acked, srtt, retrans) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).bytes_received)),
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).bytes_acked)),
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).srtt_us)),
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).total_retrans)),
        )
    };
    let ev = ConnEvent {
        start_ns,
        end_ns: now,
        bytes_received,
        bytes_acked,
        remote_addr: key.remote_addr,
        srtt_us: srtt >> 3,
        total_retrans: retrans,
        remote_port: key.remote_port,
        local_port: key.local_port,
        close_state: ctx.arg(0),
    };
    match CONN_EVENTS.reserve::<ConnEvent>(0) {
        Some(mut e) => {
            e.write(ev);
            e.submit(0);
        }
        None => aya_log_ebpf::debug!(ctx, "tcp_telemetry: ring buffer full, event lost"),
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
