//! The built-in list of address ranges whomp never sends to, and the IPv6 forms that hide an
//! IPv4 address.
//!
//! The list follows the IANA IPv4 and IPv6 special-purpose address registries: every range that
//! is not globally reachable, plus the anycast ranges (AS112, AMT, the 6to4 relay) that no webhook
//! lives on, plus the cloud metadata addresses named as such so an operator reading a refusal
//! knows what was at stake, plus platform-internal addresses that sit in public space and so are
//! in no registry (Azure's WireServer, `168.63.129.16`). For IPv6, everything outside the global
//! unicast block `2000::/3` is refused too (as `reserved` when it has no more specific name),
//! because nothing there is reachable on the internet. Ranges are matched in order and the first
//! match names the refusal, so the more specific ranges come first.
//!
//! An IPv6 address can carry an IPv4 address that the network will actually reach. The host's
//! own stack reaches the IPv4 address of an IPv4-mapped or IPv4-compatible address
//! (`::ffff:10.0.0.1`); [`embedded_v4`] digs it out so that it is checked as the IPv4 address it
//! is. Translation forms (NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo
//! `2001::/32`) are in the list as ranges of their own, refused whatever they carry: which IPv4
//! address a translator or relay reaches is up to a box whomp cannot see. A site whose NAT64
//! gateway it trusts names the prefix, and [`nat64_v4`] reads the IPv4 address out of it.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A built-in range and the short label used in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Special {
    /// The range in CIDR notation, e.g. `10.0.0.0/8`.
    pub(crate) range: &'static str,
    /// The short label, e.g. `private`.
    pub(crate) label: &'static str,
}

struct V4 {
    base: u32,
    len: u32,
    special: Special,
}

struct V6 {
    base: u128,
    len: u32,
    special: Special,
}

const fn v4(base: [u8; 4], len: u32, range: &'static str, label: &'static str) -> V4 {
    V4 {
        base: u32::from_be_bytes(base),
        len,
        special: Special { range, label },
    }
}

const fn v6(base: [u16; 8], len: u32, range: &'static str, label: &'static str) -> V6 {
    let mut value: u128 = 0;
    let mut i = 0;
    while i < 8 {
        value = (value << 16) | base[i] as u128;
        i += 1;
    }
    V6 {
        base: value,
        len,
        special: Special { range, label },
    }
}

/// Label of the cloud instance metadata endpoints (AWS, GCP, Azure, Oracle, Alibaba, ECS).
pub(crate) const METADATA: &str = "cloud metadata";

/// Label of cloud platform services on public addresses that answer only from inside the
/// platform (Azure's WireServer and host DNS, `168.63.129.16`).
pub(crate) const PLATFORM: &str = "platform internal";

const IPV4: &[V4] = &[
    v4([169, 254, 169, 254], 32, "169.254.169.254/32", METADATA),
    v4([169, 254, 170, 2], 32, "169.254.170.2/32", METADATA),
    v4([100, 100, 100, 200], 32, "100.100.100.200/32", METADATA),
    v4([168, 63, 129, 16], 32, "168.63.129.16/32", PLATFORM),
    v4([0, 0, 0, 0], 8, "0.0.0.0/8", "this network"),
    v4([10, 0, 0, 0], 8, "10.0.0.0/8", "private"),
    v4([100, 64, 0, 0], 10, "100.64.0.0/10", "cgnat"),
    v4([127, 0, 0, 0], 8, "127.0.0.0/8", "loopback"),
    v4([169, 254, 0, 0], 16, "169.254.0.0/16", "link-local"),
    v4([172, 16, 0, 0], 12, "172.16.0.0/12", "private"),
    v4(
        [192, 0, 0, 0],
        24,
        "192.0.0.0/24",
        "ietf protocol assignments",
    ),
    v4([192, 0, 2, 0], 24, "192.0.2.0/24", "documentation"),
    v4([192, 31, 196, 0], 24, "192.31.196.0/24", "as112"),
    v4([192, 52, 193, 0], 24, "192.52.193.0/24", "amt"),
    v4([192, 88, 99, 0], 24, "192.88.99.0/24", "6to4 relay anycast"),
    v4([192, 168, 0, 0], 16, "192.168.0.0/16", "private"),
    v4([192, 175, 48, 0], 24, "192.175.48.0/24", "as112"),
    v4([198, 18, 0, 0], 15, "198.18.0.0/15", "benchmarking"),
    v4([198, 51, 100, 0], 24, "198.51.100.0/24", "documentation"),
    v4([203, 0, 113, 0], 24, "203.0.113.0/24", "documentation"),
    v4([224, 0, 0, 0], 4, "224.0.0.0/4", "multicast"),
    v4([255, 255, 255, 255], 32, "255.255.255.255/32", "broadcast"),
    v4([240, 0, 0, 0], 4, "240.0.0.0/4", "reserved"),
];

const IPV6: &[V6] = &[
    v6(
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
        128,
        "fd00:ec2::254/128",
        METADATA,
    ),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "::/128", "unspecified"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "::1/128", "loopback"),
    v6(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "64:ff9b::/96",
        "nat64",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "64:ff9b:1::/48",
        "nat64 local-use",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "2002::/16", "6to4"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "2001::/32", "teredo"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "100::/64", "discard"),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "2001:2::/48",
        "benchmarking",
    ),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "2001:3::/32", "amt"),
    v6(
        [0x2001, 4, 0x112, 0, 0, 0, 0, 0],
        48,
        "2001:4:112::/48",
        "as112",
    ),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "2001:10::/28",
        "orchid",
    ),
    v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        "2001:20::/28",
        "orchid",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "2001::/23",
        "ietf protocol assignments",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "2001:db8::/32",
        "documentation",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "3fff::/20",
        "documentation",
    ),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "5f00::/16", "srv6 sid"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "2620:4f:8000::/48",
        "as112",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "fc00::/7", "unique-local"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "fe80::/10", "link-local"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "fec0::/10", "site-local"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "ff00::/8", "multicast"),
    // The rest of the address space outside 2000::/3 is reserved by the IETF.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 8, "::/8", "reserved"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 8, "100::/8", "reserved"),
    v6([0x200, 0, 0, 0, 0, 0, 0, 0], 7, "200::/7", "reserved"),
    v6([0x400, 0, 0, 0, 0, 0, 0, 0], 6, "400::/6", "reserved"),
    v6([0x800, 0, 0, 0, 0, 0, 0, 0], 5, "800::/5", "reserved"),
    v6([0x1000, 0, 0, 0, 0, 0, 0, 0], 4, "1000::/4", "reserved"),
    v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 3, "4000::/3", "reserved"),
    v6([0x6000, 0, 0, 0, 0, 0, 0, 0], 3, "6000::/3", "reserved"),
    v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 3, "8000::/3", "reserved"),
    v6([0xa000, 0, 0, 0, 0, 0, 0, 0], 3, "a000::/3", "reserved"),
    v6([0xc000, 0, 0, 0, 0, 0, 0, 0], 3, "c000::/3", "reserved"),
    v6([0xe000, 0, 0, 0, 0, 0, 0, 0], 4, "e000::/4", "reserved"),
    v6([0xf000, 0, 0, 0, 0, 0, 0, 0], 5, "f000::/5", "reserved"),
    v6([0xf800, 0, 0, 0, 0, 0, 0, 0], 6, "f800::/6", "reserved"),
    v6([0xfe00, 0, 0, 0, 0, 0, 0, 0], 9, "fe00::/9", "reserved"),
];

/// The first built-in range holding `ip`, if any.
pub(crate) fn special_v4(ip: Ipv4Addr) -> Option<Special> {
    let ip = u32::from(ip);
    IPV4.iter()
        .find(|r| {
            let mask = u32::MAX.checked_shl(32 - r.len).unwrap_or(0);
            ip & mask == r.base & mask
        })
        .map(|r| r.special)
}

/// The first built-in range holding `ip`, if any. Callers check [`embedded_v4`] first: the
/// IPv4-mapped and IPv4-compatible forms sit inside `::/8` here.
pub(crate) fn special_v6(ip: Ipv6Addr) -> Option<Special> {
    let ip = u128::from(ip);
    IPV6.iter()
        .find(|r| {
            let mask = u128::MAX.checked_shl(128 - r.len).unwrap_or(0);
            ip & mask == r.base & mask
        })
        .map(|r| r.special)
}

/// An IPv4 address carried inside an IPv6 address, and the name of the form that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Embedded {
    /// `ipv4-mapped`, `ipv4-compatible` or `nat64`.
    pub(crate) form: &'static str,
    /// The address the network would reach.
    pub(crate) v4: Ipv4Addr,
}

/// The IPv4 address that the host's own stack reaches for an IPv4-mapped (`::ffff:0:0/96`) or
/// IPv4-compatible (`::/96`, but not `::` and `::1`) address.
pub(crate) fn embedded_v4(ip: Ipv6Addr) -> Option<Embedded> {
    let form = match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] => "ipv4-mapped",
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => "ipv4-compatible",
        _ => return None,
    };
    Some(Embedded {
        form,
        v4: Ipv4Addr::from(u128::from(ip) as u32),
    })
}

/// Whether `len` is a NAT64 prefix length RFC 6052 defines.
pub(crate) fn is_nat64_len(len: u8) -> bool {
    matches!(len, 32 | 40 | 48 | 56 | 64 | 96)
}

/// The IPv4 address inside `ip` when `ip` is in the NAT64 prefix `prefix` of length `len`, laid
/// out as RFC 6052 section 2.2 says: the four bytes follow the prefix, skipping byte 8 (bits
/// 64-71, which must be zero).
pub(crate) fn nat64_v4(ip: Ipv6Addr, prefix: Ipv6Addr, len: u8) -> Option<Embedded> {
    if !is_nat64_len(len) {
        return None;
    }
    let mask = u128::MAX << (128 - u32::from(len));
    if u128::from(ip) & mask != u128::from(prefix) & mask {
        return None;
    }
    let bytes = ip.octets();
    let mut v4 = (usize::from(len) / 8..16)
        .filter(|&i| i != 8)
        .map(|i| bytes[i]);
    let mut next = || v4.next().unwrap_or(0);
    Some(Embedded {
        form: "nat64",
        v4: Ipv4Addr::new(next(), next(), next(), next()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label4(ip: &str) -> Option<&'static str> {
        special_v4(ip.parse().unwrap()).map(|s| s.label)
    }

    fn label6(ip: &str) -> Option<&'static str> {
        special_v6(ip.parse().unwrap()).map(|s| s.label)
    }

    #[test]
    fn every_ipv4_range_is_named() {
        for (ip, label) in [
            ("0.1.2.3", "this network"),
            ("10.255.0.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("100.100.100.200", METADATA),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", METADATA),
            ("169.254.170.2", METADATA),
            ("169.254.1.1", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "ietf protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("192.31.196.1", "as112"),
            ("192.52.193.1", "amt"),
            ("192.88.99.1", "6to4 relay anycast"),
            ("192.168.1.1", "private"),
            ("192.175.48.1", "as112"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.1", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.254", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            assert_eq!(label4(ip), Some(label), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "93.184.216.34",
        ] {
            assert_eq!(label4(ip), None, "{ip}");
        }
    }

    #[test]
    fn every_ipv6_range_is_named() {
        for (ip, label) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00:ec2::254", METADATA),
            ("64:ff9b:1::1", "nat64 local-use"),
            ("100::1", "discard"),
            ("2001:2::1", "benchmarking"),
            ("2001:3::1", "amt"),
            ("2001:4:112::1", "as112"),
            ("2001:10::1", "orchid"),
            ("2001:20::1", "orchid"),
            ("2001:100::1", "ietf protocol assignments"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("3fff:fff::1", "documentation"),
            ("5f00::1", "srv6 sid"),
            ("2620:4f:8000::1", "as112"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::2:0:0:1", "reserved"),
            ("400::1", "reserved"),
            ("4000::1", "reserved"),
            ("e000::1", "reserved"),
            ("fe00::1", "reserved"),
        ] {
            assert_eq!(label6(ip), Some(label), "{ip}");
        }
        for ip in [
            "2606:4700::1111",
            "2a00:1450::1",
            "2001:200::1",
            "3fff:1000::1",
        ] {
            assert_eq!(label6(ip), None, "{ip}");
        }
    }

    #[test]
    fn finds_embedded_ipv4() {
        let one = |ip: &str| -> Option<(&str, String)> {
            embedded_v4(ip.parse().unwrap()).map(|e| (e.form, e.v4.to_string()))
        };
        assert_eq!(
            one("::ffff:10.0.0.1"),
            Some(("ipv4-mapped", "10.0.0.1".into()))
        );
        assert_eq!(
            one("::ffff:7f00:1"),
            Some(("ipv4-mapped", "127.0.0.1".into()))
        );
        assert_eq!(
            one("::10.0.0.1"),
            Some(("ipv4-compatible", "10.0.0.1".into()))
        );
        assert_eq!(
            one("::0.0.0.2"),
            Some(("ipv4-compatible", "0.0.0.2".into()))
        );
        assert_eq!(one("::"), None);
        assert_eq!(one("::1"), None);
        // Translation forms are ranges of their own, not judged by what they carry.
        assert_eq!(one("64:ff9b::a9fe:a9fe"), None);
        assert_eq!(one("2002:c0a8:101::1"), None);
        assert_eq!(one("2606:4700::1111"), None);
        assert_eq!(label6("64:ff9b::5db8:d822"), Some("nat64"));
        assert_eq!(label6("2002:5db8:d822::1"), Some("6to4"));
        assert_eq!(
            label6("2001:0:4136:e378:8000:63bf:a247:27dd"),
            Some("teredo")
        );
        assert_eq!(label4("168.63.129.16"), Some(PLATFORM));
    }

    #[test]
    fn reads_ipv4_out_of_every_rfc6052_prefix_length() {
        // RFC 6052 section 2.4's examples: 192.0.2.33 under 2001:db8::/32 ... /96.
        for (len, ip) in [
            (32, "2001:db8:c000:221::"),
            (40, "2001:db8:1c0:2:21::"),
            (48, "2001:db8:122:c000:2:2100::"),
            (56, "2001:db8:122:3c0:0:221::"),
            (64, "2001:db8:122:344:c0:2:2100:0"),
            (96, "2001:db8:122:344::192.0.2.33"),
        ] {
            let prefix: Ipv6Addr = ip.parse().unwrap();
            let got = nat64_v4(prefix, prefix, len).map(|e| e.v4.to_string());
            assert_eq!(got.as_deref(), Some("192.0.2.33"), "/{len}");
        }
        let wkp: Ipv6Addr = "64:ff9b::".parse().unwrap();
        assert_eq!(nat64_v4("64:ff9b:1::1".parse().unwrap(), wkp, 96), None);
        assert_eq!(nat64_v4(wkp, wkp, 33), None);
    }
}
