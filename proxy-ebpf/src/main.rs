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
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use portcullis_ebpf_common::{
    v4_mapped, GateConfig, SynBucket, COUNTERS as N_COUNTERS, COUNTER_DROPPED_BANNED, COUNTER_DROPPED_DENY,
    COUNTER_DROPPED_SYN_RATE, COUNTER_PASSED, MAX_SYN_PORTS,
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
fn drop_for(counter: u32) -> Result<u32, ()> {
    count(counter);
    Ok(xdp_action::XDP_DROP)
}

#[inline(always)]
fn live(expiry: u64, now: u64) -> bool {
    expiry > now
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
            if ALLOW_V4.get(&Key::new(32, src4)).is_some() {
                return pass();
            }
            if let Some(exp) = DENY_V4.get(&Key::new(32, src4)) {
                if live(*exp, now) {
                    return drop_for(COUNTER_DROPPED_DENY);
                }
            }
            (v4_mapped(src4), off + ihl, proto)
        }
        ETH_P_IPV6 => {
            let next: u8 = read(ctx, off + 6)?;
            let src6: [u8; 16] = read(ctx, off + 8)?;
            if ALLOW_V6.get(&Key::new(128, src6)).is_some() {
                return pass();
            }
            if let Some(exp) = DENY_V6.get(&Key::new(128, src6)) {
                if live(*exp, now) {
                    return drop_for(COUNTER_DROPPED_DENY);
                }
            }
            // Extension headers are not walked: a SYN behind one is not rate limited.
            (src6, off + 40, next)
        }
        _ => return pass(),
    };

    // SAFETY: the value reference is used immediately, before any other map operation.
    if let Some(exp) = unsafe { BANNED.get(&src) } {
        if live(*exp, now) {
            return drop_for(COUNTER_DROPPED_BANNED);
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
                return drop_for(COUNTER_DROPPED_SYN_RATE);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
