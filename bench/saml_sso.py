"""Benchmark: SAML SSO for a user who already has a session, against the real server (gunicorn on loopback).

Each request is a fresh AuthnRequest (HTTP-Redirect) and each answer a signed assertion inside a signed
response. Prints throughput, latency percentiles, the server's CPU seconds, responses per server CPU-second,
and, measured in the same run, the raw RSA-2048 signing rate of the same key on one core: a response costs
two signatures, so half that rate is the ceiling for one core.

    .venv/bin/python bench/saml_sso.py [--seconds 10] [--clients 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

IDP = str(Path(sys.executable).with_name("idp"))
SP = "https://sp.bench.example/metadata"
SP_METADATA = f"""<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
        Location="https://sp.bench.example/acs" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn's master and workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def authn_request(base: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_{uuid.uuid4().hex}" Version="2.0" IssueInstant="{now}" Destination="{base}/saml/sso">'
        f"<saml:Issuer>{SP}</saml:Issuer></samlp:AuthnRequest>"
    )
    deflated = zlib.compress(xml.encode())[2:-4]
    return urlencode({"SAMLRequest": base64.b64encode(deflated).decode()})


def raw_rsa_rate(key_pem: bytes, seconds: float = 1.5) -> float:
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    data = os.urandom(256)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        count += 1
    return count / (time.perf_counter() - start)


def run_client(base: str, cookies: dict[str, str], until: float, latencies: list[float], errors: list[str]) -> None:
    http = requests.Session()
    http.cookies.update(cookies)
    while time.monotonic() < until:
        url = f"{base}/saml/sso?{authn_request(base)}"
        t0 = time.perf_counter()
        resp = http.get(url, timeout=10)
        elapsed = time.perf_counter() - t0
        if resp.status_code != 200 or b'name="SAMLResponse"' not in resp.content:
            errors.append(f"{resp.status_code}")
            continue
        latencies.append(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "IDP_DATA_DIR": tmp, "IDP_BASE_URL": base, "IDP_LOG_LEVEL": "WARNING",
               "IDP_WORKERS": str(args.workers)}
        (Path(tmp) / "sp.xml").write_text(SP_METADATA)
        subprocess.run([IDP, "user", "add", "bench", "--email", "bench@example.com", "--password-stdin"],
                       input="bench-password\n", env=env, check=True, capture_output=True, text=True)
        subprocess.run([IDP, "sp", "add", "--metadata", str(Path(tmp) / "sp.xml")],
                       env=env, check=True, capture_output=True)
        subprocess.run([IDP, "app", "open-to-all", SP], env=env, check=True, capture_output=True)
        server = subprocess.Popen([IDP, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            http = requests.Session()
            for _ in range(150):
                try:
                    page = http.get(f"{base}/login", timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
            assert token, "no CSRF token on the login page"
            http.post(f"{base}/login", data={"csrf_token": token.group(1), "username": "bench",
                                             "password": "bench-password"}, timeout=10)
            cookies = http.cookies.get_dict()

            # Warm up the workers (imports, caches) before measuring.
            run_client(base, cookies, time.monotonic() + 1.0, [], [])
            latencies: list[float] = []
            errors: list[str] = []
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            until = t0 + args.seconds
            threads = [threading.Thread(target=run_client, args=(base, cookies, until, latencies, errors))
                       for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall, cpu = time.monotonic() - t0, cpu_seconds(server.pid) - cpu0
        finally:
            server.terminate()
            server.wait(10)
        manifest = json.loads((Path(tmp) / "keys" / "manifest.json").read_text())
        kid = next(k["kid"] for k in manifest["keys"] if k["state"] == "active")
        rsa_rate = raw_rsa_rate((Path(tmp) / "keys" / f"{kid}.key").read_bytes())

    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    per_cpu = len(lat) / cpu if cpu else float("nan")
    print(f"SAML SSO with an existing session: {args.clients} clients, {args.workers} gunicorn workers, "
          f"{args.seconds:.0f} s")
    print(f"  signed responses      {len(lat)}  ({len(errors)} errors)")
    print(f"  throughput            {len(lat) / wall:8.1f} responses/s")
    print(f"  latency p50/p95/p99   {q[49] * 1000:.1f} / {q[94] * 1000:.1f} / {q[98] * 1000:.1f} ms")
    print(f"  server CPU            {cpu:.2f} s  ->  {per_cpu:.1f} responses per server CPU-second")
    print(f"  reference: raw RSA-2048 SHA-256 signatures with the same key: {rsa_rate:.0f}/s on one core")
    print(f"  ratio: responses per CPU-s / (raw signatures per s / 2 signatures per response) = "
          f"{per_cpu / (rsa_rate / 2):.3f}")


if __name__ == "__main__":
    main()
