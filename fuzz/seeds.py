#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the repository's own test vectors:
the keepalived/FRR/BIRD captures (userspace/src/*/testdata, copied from ../shared/captures),
the BGP session dump, the varnishtest files, the example configs and unit-test vectors.

Run from anywhere: `python3 fuzz/seeds.py`. It rewrites the seeds it owns (names starting with
`seed-`) and leaves other files alone. Each seed starts with the target's flag or config byte
as described at the top of its fuzz_targets/<target>.rs.
"""

import hashlib
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
US = ROOT / "userspace"


def pcap_ipv4(path):
    """(timestamp in µs, IPv4 packet) of every IPv4 frame of a little-endian Ethernet pcap."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", path
    at, out = 24, []
    while at + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, at)
        frame = data[at + 16 : at + 16 + caplen]
        at += 16 + caplen
        if frame[12:14] == b"\x08\x00":
            out.append((sec * 1_000_000 + usec, frame[14:]))
    return out


def ip_payload(packet):
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from(">H", packet, 2)[0]
    return packet[ihl:total]


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(bytes(data))


def unique(items):
    seen, out = set(), []
    for name, data in items:
        h = hashlib.sha1(bytes(data)).digest()
        if h not in seen:
            seen.add(h)
            out.append((name, data))
    return out


def clear_seeds():
    for f in CORPUS.glob("*/seed-*"):
        f.unlink()


OSPF_TYPES = {1: "hello", 2: "dd", 3: "lsr", 4: "lsu", 5: "lsack"}


def ospf():
    broadcast = pcap_ipv4(US / "src/ospf/testdata/ospf-frr-bird-broadcast.pcap")
    md5 = pcap_ipv4(US / "src/ospf/testdata/ospf-md5-hellos-frr-bird.pcap")
    seeds = []
    for i, (_, p) in enumerate(broadcast):
        o = ip_payload(p)
        kind = OSPF_TYPES.get(o[1], "x")
        seeds.append((f"null-{i:03}-{kind}", b"\x00" + o))
    for i, (_, p) in enumerate(md5):
        seeds.append((f"md5-{i:03}-hello", b"\x02" + ip_payload(p)))
    # Sealed variants: the target recomputes the checksum / digest.
    seeds.append(("simple-sealed-hello", b"\x05" + ip_payload(broadcast[0][1])))
    seeds.append(("md5-sealed-lsu", b"\x06" + next(ip_payload(p) for _, p in broadcast if p[21] == 4)))
    for name, data in unique(seeds):
        write("ospf_packet", name, data)

    # LSAs out of the LS Updates.
    lsas = []
    for _, p in broadcast:
        o = ip_payload(p)
        if o[1] != 4:
            continue
        body = o[24:]
        count = struct.unpack_from(">I", body, 0)[0]
        at = 4
        for _ in range(count):
            length = struct.unpack_from(">H", body, at + 18)[0]
            lsa = body[at : at + length]
            at += length
            lsas.append((f"lsa-type{lsa[3]}-{len(lsas):02}", b"\x00" + lsa))
            # The same header and body through Lsa::build.
            lsas.append((f"built-type{lsa[3]}-{len(lsas):02}", b"\x01" + lsa))
    for name, data in unique(lsas):
        write("ospf_lsa", name, data)

    # Instance replays: the router under test joins the captured segment. Ops: 2 = advance
    # time by n x 50 ms then tick, 0 = deliver a raw packet (src, dst, length, bytes).
    def replay(cfg, packets, limit):
        out = bytearray([cfg])
        last = packets[0][0]
        for ts, p in packets[:limit]:
            steps = min(255, (ts - last) // 50_000)
            last = ts
            if steps:
                out += bytes([2, steps])
            o = ip_payload(p)
            out += b"\x00" + p[12:16] + p[16:20] + struct.pack(">H", len(o)) + o
        return out

    write("ospf_instance", "replay-broadcast-first-40", replay(0x00, broadcast, 40))
    write("ospf_instance", "replay-broadcast-all", replay(0x00, broadcast, len(broadcast)))
    write("ospf_instance", "replay-broadcast-priority0", replay(0x02, broadcast, 60))
    write("ospf_instance", "replay-md5", replay(0x08, md5, len(md5)))
    # The two portier routers alone: adjacency, announcements, a corrupted packet, shutdown.
    alone = bytes([0x00]) + bytes([2, 40]) * 12
    write("ospf_instance", "peer-adjacency", alone)
    write(
        "ospf_instance",
        "peer-announce-corrupt-shutdown",
        alone + bytes([3, 0x0F, 0x05]) + bytes([2, 40]) * 4 + bytes([8, 0, 30, 0xFF])
        + bytes([2, 40]) * 4 + bytes([6, 1]) + bytes([2, 40]) * 4,
    )
    write("ospf_instance", "peer-p2p-md5", bytes([0x09]) + bytes([2, 40]) * 12 + bytes([7, 2]))


def vrrp():
    seeds = []
    for version, flag in (("v2", 0x00), ("v3", 0x01)):
        packets = pcap_ipv4(US / f"src/vrrp/testdata/keepalived-vrrp{version}.pcap")
        for i, (_, p) in enumerate(packets):
            seeds.append((f"{version}-ipv4-{i:02}", bytes([flag]) + p))
            # The payload alone, checksum repaired for 10.99.0.1 -> 224.0.0.18.
            seeds.append((f"{version}-payload-{i:02}", bytes([flag | 0x08 | 0x10]) + ip_payload(p)))
            seeds.append((f"{version}-ipv6-{i:02}", bytes([flag | 0x04 | 0x10]) + ip_payload(p)))
    for name, data in unique(seeds):
        write("vrrp_packet", name, data)


def proxy_protocol():
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    v4 = sig + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 10, 203, 0, 113, 10, 0xA0, 0x28, 0x00, 0x50])
    v6 = (
        sig + b"\x21\x21\x00\x29"
        + bytes.fromhex("20010db8000000000000000000000001" "20010db8000000000000000000000002")
        + b"\x13\x88\x01\xbb" + b"\x04\x00\x02\xaa\xbb"
    )
    # From proxy_protocol_v2.vtc (its sendhex lines).
    vtc4 = bytes.fromhex("0d0a0d0a000d0a515549540a2111000c" "c0000207cb00710ac8220050")
    vtc6 = bytes.fromhex(
        "0d0a0d0a000d0a515549540a21210024" "20010db8000000000000000000000007"
        "20010db8000000000000000000000001" "01bb0050"
    )
    write("proxy_protocol", "tcp4", v4 + b"GET / HTTP/1.1\r\n")
    write("proxy_protocol", "tcp6-tlv", v6)
    write("proxy_protocol", "local", sig + b"\x20\x00\x00\x00")
    write("proxy_protocol", "unix", sig + b"\x21\x31\x00\x0c" + bytes(12))
    write("proxy_protocol", "vtc-tcp4", vtc4)
    write("proxy_protocol", "vtc-tcp6", vtc6)


VTC = US / "tests/vtc"


def vtc_sends():
    out = []
    for f in sorted(VTC.glob("*.vtc")):
        for m in re.finditer(r'^\s*send "((?:[^"\\]|\\.)*)"', f.read_text(), re.M):
            s = m.group(1).encode().decode("unicode_escape").encode("latin-1")
            out.append((f.stem, s))
    return out


RESPONSES = [
    b"HTTP/1.1 200 Fine\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nConnection: keep-alive, X-Hop\r\n"
    b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: Yes\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n"
    b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 9\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil close",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=9\r\n"
    b"X-Public: 2\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
]


def http():
    requests = [(n, s) for n, s in vtc_sends() if re.match(rb"(GET|HEAD|POST) ", s)]
    requests.append(("fast-test", b"GET /a?b=c HTTP/1.1\r\nHost: Shop.Example\r\nConnection: keep-alive, X-Secret\r\n"
                     b"X-Secret: s\r\nX-Forwarded-For: 192.0.2.7\r\nForwarded: for=192.0.2.7\r\nAccept: */*\r\n\r\n"))
    requests.append(("head", b"HEAD /x HTTP/1.1\r\nHost: todo.example\r\nConnection: close\r\n\r\n"))
    requests.append(("h2-route", b"GET /api/v1 HTTP/1.1\r\nHost: shop.example\r\n\r\n"))
    seeds = []
    for i, (name, req) in enumerate(requests):
        seeds.append((f"req-{i:02}-{name}", b"\x00" + req + RESPONSES[i % len(RESPONSES)]))
    for i, resp in enumerate(RESPONSES):
        for flag in (0x01, 0x03, 0x05):
            seeds.append((f"resp-{i:02}-{flag:02x}", bytes([flag]) + resp))
    for _, s in vtc_sends():
        if s.startswith(b"HTTP/1"):
            seeds.append((f"resp-vtc-{len(seeds)}", b"\x01" + s))
    for name, data in unique(seeds):
        write("http_fast_head", name, data)

    bodies = [
        b"5\r\nhello\r\n1a;name=v\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n",
        b"0\r\n\r\n",
        b"000\r\n\r\n",
        b"2\r\nok\r\n0\r\nX-Checksum: 7\r\n\r\n",
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
        b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 9\r\n\r\nHTTP/1.1 200 OK\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
        b"1234567890abcdef0\r\n",
    ]
    for i, b in enumerate(bodies):
        write("chunked", f"body-{i:02}", bytes([0x21 + 16 * i]) + b)


def config():
    files = [ROOT / "examples/lab-lb.toml", ROOT / "examples/lab-host.toml", US / "src/config/example.toml"]
    for f in files:
        if f.exists():
            write("config", f.stem, f.read_bytes())
    for f in sorted(VTC.glob("*.vtc")):
        m = re.search(r"<<EOF\n(.*?)\nEOF", f.read_text(), re.S)
        if m:
            write("config", f"vtc-{f.stem}", m.group(1).encode())


def small():
    for i, q in enumerate([
        "service=web&backend=10.0.0.21",
        "pool=todo&server=172.17.0.10%3A8080&weight=3",
        "backend=2001%3Adb8%3A%3A1&service=a+b",
        "a=100%&b=%zz&c=%7e&&d",
    ]):
        write("admin_query", f"query-{i}", q.encode())
    for i, p in enumerate([
        "/public/../admin", "/public/%2e%2e/admin", "/public%2F..%2Fadmin", "/a//b///c/",
        "/%7Euser/%41", "/a%20b", "/a%3f", "/100%", "a/b", "*", "/api/v1/items", "/a.b/c..d/.e",
    ]):
        write("path_normalise", f"path-{i:02}", p.encode())


def bfd():
    # A Down packet from session 0x01020304 (the unit test's vector), and a Up one.
    down = bytes.fromhex("20400318" "01020304" "00000000" "000f4240" "000493e0" "00000000")
    up = bytes.fromhex("20c00318" "01020304" "0a0a0001" "0000c350" "0000c350" "00000000")
    for cfg in range(6):
        tick = bytes([2, 250]) * 6
        write("bfd_packet", f"auth{cfg}-handshake", bytes([cfg]) + tick + bytes([3]) + tick + bytes([3]) + tick)
        write(
            "bfd_packet",
            f"auth{cfg}-crafted",
            bytes([cfg, 1]) + down + b"\x00\x00\x00\x07" + bytes([1]) + up + b"\x00\x00\x00\x08"
            + bytes([2, 100, 4, 5, 5, 3, 2, 100, 5, 3, 0xFF, 2, 100, 6, 2, 100]),
        )
    write("bfd_packet", "raw-down", bytes([0, 0, 24]) + down)


def bgp():
    text = (US / "src/bgp/testdata/frr-bird-session.txt").read_text()
    seeds = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        conn, sender, kind, hexs = line.split()
        seeds.append((f"{conn}-{sender}-{kind.lower()}-{len(seeds):02}", b"\x01" + bytes.fromhex(hexs)))
    for name, data in unique(seeds):
        write("bgp_message", name, data)


def docker():
    """Docker 20.10's and Podman 4.3's inspect answers (flag 0) and events (flag 1), as the
    unit tests use."""
    data = US / "src/discovery/docker/testdata"
    for f in sorted(data.glob("*inspect_*.json")):
        write("docker_engine", f.stem, b"\x00" + f.read_bytes())
    for events in sorted(data.glob("*events.jsonl")):
        for i, line in enumerate(events.read_text().splitlines()):
            write("docker_engine", f"{events.stem}-{i:02}", b"\x01" + line.encode())


if __name__ == "__main__":
    clear_seeds()
    ospf()
    vrrp()
    proxy_protocol()
    http()
    config()
    small()
    bfd()
    bgp()
    docker()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
